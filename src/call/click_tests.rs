//! Click-to-call in the engine: the user's devices ring with our offer;
//! the one that answers is ACKed and becomes the caller (the dialplan
//! starts), the others are cancelled; the target is offered the codec the
//! device chose and bridged when it answers; no answer ends the call.

use super::tests::{config, dial_1002, effects, engine, peer, respond_from_callee, SDP_TEXT};
use super::*;
use crate::clock::Now;
use crate::media::sdp;
use crate::sip::{HeaderName, Method};
use std::time::Duration;

fn devices(ports: &[u16]) -> Vec<Contact> {
    ports
        .iter()
        .map(|p| Contact {
            target: "1001".into(),
            uri: format!("sip:1001@127.0.0.1:{p}"),
            peer: peer(*p),
            trunk: None,
        })
        .collect()
}

fn click(m: &mut CallEngine, ports: &[u16], now: Instant) -> (CallRef, Vec<SipMessage>) {
    let id = m
        .click_to_call(
            ClickToCall {
                account: "pbx.test",
                user: "1001",
                name: "Olivia",
                may_call_out: false,
                devices: devices(ports),
                target: "1002",
            },
            Now::at(now),
        )
        .unwrap();
    let invites = effects(m)
        .into_iter()
        .filter_map(|o| match o {
            Output::Request { req, .. } if req.method() == Some(&Method::Invite) => Some(req),
            _ => None,
        })
        .collect();
    (id, invites)
}

#[test]
fn the_device_that_answers_becomes_the_caller_and_the_target_gets_its_codec() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (id, invites) = click(&mut m, &[6000, 6001], now);
    assert_eq!(invites.len(), 2, "both devices ring");
    let offer = sdp::media_info(&invites[0].body).unwrap();
    assert_eq!(offer.payload_types, [0, 8, 101], "our own offer");
    assert!(invites[0]
        .header(&HeaderName::From)
        .unwrap()
        .starts_with("\"Call to 1002\" <sip:1002@pbx.test>"));
    // The second device answers with PCMU only.
    let answer = SDP_TEXT.replace("RTP/AVP 0 101", "RTP/AVP 0");
    let key = client_key(&invites[1]).unwrap();
    m.on_response(&key, respond_from_callee(&invites[1], 200, Some(&answer)), Now::at(now));
    let e = effects(&mut m);
    assert!(e
        .iter()
        .any(|o| matches!(o, Output::Stateless { msg, .. } if msg.method() == Some(&Method::Ack))));
    assert!(
        e.iter()
            .any(|o| matches!(o, Output::Request { req, .. } if req.method() == Some(&Method::Cancel))),
        "the other device stops ringing"
    );
    let [Output::StartDialplan { info, .. }] = &e
        .iter()
        .filter(|o| matches!(o, Output::StartDialplan { .. }))
        .collect::<Vec<_>>()[..]
    else {
        panic!("{e:?}")
    };
    assert_eq!((info.from.as_str(), info.to.as_str()), ("1001", "1002"));
    // The dialplan dials the target: it is offered what the device chose.
    let target = dial_1002(&mut m, &cfg, id, now);
    assert_eq!(sdp::media_info(&target.body).unwrap().payload_types, [0]);
    let key = client_key(&target).unwrap();
    m.on_response(&key, respond_from_callee(&target, 200, Some(SDP_TEXT)), Now::at(now));
    effects(&mut m);
    let links = media.0.lock().unwrap().links.len();
    assert_eq!(links, 2, "device and target bridged both ways");
    assert_eq!(m.views(Now::at(now))[0].state, "connected");
}

#[test]
fn when_no_device_answers_the_call_ends_unanswered() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Instant::now();
    let (_, invites) = click(&mut m, &[6000], now);
    let key = client_key(&invites[0]).unwrap();
    m.on_response(&key, respond_from_callee(&invites[0], 486, None), Now::at(now));
    let e = effects(&mut m);
    let Some(Output::WriteRecord { record, .. }) = e.iter().find(|o| matches!(o, Output::WriteRecord { .. })) else {
        panic!("{e:?}")
    };
    assert_eq!(
        (
            record.caller.as_str(),
            record.callee.as_str(),
            record.disposition.as_str()
        ),
        ("1001", "1002", "busy")
    );
    assert!(m.views(Now::at(now)).is_empty());
    // Rang out: the ring timeout ends it too.
    let (_, _) = click(&mut m, &[6000], now);
    m.handle_timeout(Now::at(now + Duration::from_secs(120)));
    let e = effects(&mut m);
    assert!(
        e.iter()
            .any(|o| matches!(o, Output::WriteRecord { record, .. } if record.disposition == "no-answer")),
        "{e:?}"
    );
    assert!(m.views(Now::at(now)).is_empty());
}
