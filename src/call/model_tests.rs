//! Legs and bridges on virtual time, with no sockets: parking, bridging a
//! parked leg to a new one, moving a leg between bridges, a third leg
//! hanging up, and in-dialog requests matched by the full dialog id.

use super::bridge::{Role, Source};
use super::leg::LegId;
use super::tests::*;
use super::*;
use crate::clock::Now;
use crate::dialplan::Reply;
use crate::events::LegPhase;
use crate::media::EndpointId;
use crate::sip::Method;

fn leg_of(m: &CallEngine, call_id: &str) -> LegId {
    *m.by_call_id.get(call_id).expect("a leg with this Call-ID")
}

fn callee_leg(m: &CallEngine, call: CallRef) -> LegId {
    m.calls[&call].connected.expect("connected")
}

/// A conversation whose caller the dialplan answered itself and parked
/// with a prompt (`playback`).
fn parked_with_prompt(
    m: &mut CallEngine,
    cfg: &crate::config::Config,
    call_id: &str,
    now: Instant,
) -> (CallRef, LegId) {
    let id = started(m, cfg, "1001", invite_from("1001", call_id, "1002"), Now::at(now));
    effects(m);
    m.playback(id, "prompts/welcome.wav", Now::at(now));
    let e = effects(m);
    assert!(matches!(&e[..], [Output::Respond { resp, .. }] if resp.status() == Some(200)));
    assert!(replies(&e).is_empty(), "playback replies when the prompt has been sent");
    (id, leg_of(m, call_id))
}

#[test]
fn a_parked_leg_hears_its_source_and_is_later_bridged_to_a_new_leg() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (parked_call, parked) = parked_with_prompt(&mut m, &cfg, "parked", now);
    assert_eq!(
        media.0.lock().unwrap().played,
        vec![(parked.endpoint(), "prompts/welcome.wav".to_string())]
    );
    assert_eq!(m.bridge_of(parked), None);
    m.playback_done(parked.endpoint(), Now::at(now));
    assert_eq!(replies(&effects(&mut m)), vec![Reply::Done]);

    // A new call comes in and is answered; its callee leg is new.
    let (call, _, _) = connected(&mut m, &cfg, now, invite_from("1001", "second", "1002"));
    let new_leg = callee_leg(&m, call);
    let bridge = m.bridge_legs(parked, new_leg).unwrap();
    let members: Vec<_> = m.bridge(bridge).unwrap().members.clone();
    assert_eq!(members, vec![(parked, Role::Talk), (new_leg, Role::Talk)]);
    let links = media.0.lock().unwrap().links.clone();
    assert_eq!(links.get(&parked.endpoint()), Some(&new_leg.endpoint()));
    assert_eq!(links.get(&new_leg.endpoint()), Some(&parked.endpoint()));
    // The second call's caller is left alone (parked), not hung up.
    let second_caller = leg_of(&m, "second");
    assert_eq!(m.bridge_of(second_caller), None);
    assert!(!links.contains_key(&second_caller.endpoint()));
    assert!(m.legs[&second_caller].state.is_answered());
    assert!(m.calls.contains_key(&parked_call));
}

#[test]
fn a_leg_moves_between_bridges_while_both_parties_stay_up() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (call, _, _) = connected(&mut m, &cfg, now, invite_from("1001", "first", "1002"));
    let caller = leg_of(&m, "first");
    let callee = callee_leg(&m, call);
    let (_, parked) = parked_with_prompt(&mut m, &cfg, "other", now);
    let ports_before = m.relay_ports_in_use();
    let local_before = m.legs[&callee].local_media;

    // The callee moves to a bridge with the parked leg (a transfer's last step).
    let target = m.bridge_legs(parked, caller).unwrap();
    assert_eq!(m.bridge_of(caller), Some(target));
    m.move_leg(callee, target).ok();
    let e = effects(&mut m);
    assert!(
        e.iter()
            .all(|o| !matches!(o, Output::Request { .. } | Output::Respond { .. })),
        "no BYE, no re-INVITE: {e:?}"
    );
    for leg in [caller, callee, parked] {
        assert!(m.legs[&leg].state.is_answered(), "{leg:?} still up");
    }
    assert_eq!(
        m.legs[&callee].local_media, local_before,
        "the party's address is unchanged"
    );
    assert_eq!(m.relay_ports_in_use(), ports_before, "no new ports");
    // Three talkers in one bridge: nobody is linked until mixing exists;
    // move the caller out again and the other two are joined.
    m.park(caller, Source::Silence).unwrap();
    let links = media.0.lock().unwrap().links.clone();
    assert_eq!(links.get(&callee.endpoint()), Some(&parked.endpoint()));
    assert_eq!(links.get(&parked.endpoint()), Some(&callee.endpoint()));
    assert!(!links.contains_key(&caller.endpoint()));
}

#[test]
fn three_legs_one_hangs_up_and_the_other_two_go_on() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (call, _, _) = connected(&mut m, &cfg, now, invite_from("1001", "talk", "1002"));
    let caller = leg_of(&m, "talk");
    let callee = callee_leg(&m, call);
    let bridge = m.bridge_of(caller).unwrap();
    // A third party (a supervisor's call the dialplan answered) listens in.
    started(
        &mut m,
        &cfg,
        "1003",
        invite_from("1003", "listener", "1002"),
        Now::at(now),
    );
    effects(&mut m);
    let listener_call = *m.calls.keys().find(|c| **c != call).unwrap();
    m.answer(listener_call, Now::at(now));
    let e = effects(&mut m);
    let listener_tag = our_tag(&e);
    let listener = leg_of(&m, "listener");
    m.join(listener, bridge, Role::Listen).unwrap();
    assert_eq!(m.bridge(bridge).unwrap().members.len(), 3);

    // The listener hangs up.
    let (bye_key, bye) = from_caller("BYE", "listener", &listener_tag, "a");
    m.on_in_dialog(bye_key.clone(), bye, Now::at(now)).unwrap();
    let e: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    let byes = e
        .iter()
        .filter(|o| matches!(o, Output::Request { req, .. } if req.method() == Some(&Method::Bye)))
        .count();
    assert_eq!(byes, 0, "nobody else is hung up: {e:?}");
    assert!(e.iter().any(|o| matches!(o,
        Output::Event(crate::events::DomainEvent::LegState { party, phase: LegPhase::Terminated, .. }) if party == "1003")));
    assert_eq!(
        m.bridge(bridge).unwrap().members,
        vec![(caller, Role::Talk), (callee, Role::Talk)]
    );
    let links = media.0.lock().unwrap().links.clone();
    assert_eq!(links.get(&caller.endpoint()), Some(&callee.endpoint()));
    assert_eq!(links.get(&callee.endpoint()), Some(&caller.endpoint()));
    assert!(!media.0.lock().unwrap().open.contains(&EndpointId(listener.0)));
    assert_eq!(
        m.views(Now::at(now)).iter().filter(|v| v.state == "connected").count(),
        1
    );
}

#[test]
fn a_bye_with_the_right_call_id_but_a_wrong_tag_gets_481_and_the_call_stays_up() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Instant::now();
    let (call, tag, _) = connected(&mut m, &cfg, now, invite_from("1001", "guess", "1002"));
    for (ours, theirs) in [("wrong", "a"), (tag.as_str(), "wrong"), ("", "a")] {
        let (key, bye) = from_caller("BYE", "guess", ours, theirs);
        let err = m.on_in_dialog(key, bye, Now::at(now)).unwrap_err();
        assert_eq!(err.status, 481, "tags {ours}/{theirs}");
    }
    // A re-INVITE that would point the relay elsewhere: also refused.
    let (key, reinvite) = from_caller("INVITE", "guess", "wrong", "a");
    assert_eq!(m.on_in_dialog(key, reinvite, Now::at(now)).unwrap_err().status, 481);
    assert!(effects(&mut m).is_empty(), "nothing sent");
    assert_eq!(m.views(Now::at(now))[0].state, "connected");
    assert!(m.calls.contains_key(&call));
    // The right tags end it.
    let (key, bye) = from_caller("BYE", "guess", &tag, "a");
    m.on_in_dialog(key, bye, Now::at(now)).unwrap();
    assert!(m.is_empty());
}

#[test]
fn leg_states_are_announced_as_domain_events() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Instant::now();
    started(&mut m, &cfg, "1001", invite(), Now::at(now));
    let phases: Vec<(String, LegPhase)> = std::iter::from_fn(|| m.poll_output())
        .filter_map(|o| match o {
            Output::Event(crate::events::DomainEvent::LegState { party, phase, .. }) => Some((party, phase)),
            _ => None,
        })
        .collect();
    assert_eq!(phases, vec![("1001".to_string(), LegPhase::Trying)]);
}

#[test]
fn a_request_in_the_dialog_from_another_address_must_prove_it_is_the_party() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Instant::now();
    let (_, tag, _) = connected(&mut m, &cfg, now, invite_from("1001", "src", "1002"));
    let (_, bye) = from_caller("BYE", "src", &tag, "a");
    assert_eq!(m.party_elsewhere(&bye, peer(6000)), None, "the caller's own address");
    assert_eq!(
        m.party_elsewhere(&bye, peer(9999)),
        None,
        "another port of the same host"
    );
    let stranger = Peer {
        transport: crate::sip::transaction::TransportKind::Udp,
        addr: "127.0.0.2:6000".parse().unwrap(),
    };
    assert_eq!(
        m.party_elsewhere(&bye, stranger),
        Some(("1001".to_string(), "pbx.test".to_string()))
    );
    // Its ACK (which cannot be challenged) is ignored.
    let (_, ack) = from_caller("ACK", "src", &tag, "a");
    let leg = leg_of(&m, "src");
    m.legs.get_mut(&leg).unwrap().state = leg::LegState::Answered { acked: false };
    m.on_ack(&ack, stranger);
    assert_eq!(m.legs[&leg].state, leg::LegState::Answered { acked: false });
    m.on_ack(&ack, peer(6000));
    assert_eq!(m.legs[&leg].state, leg::LegState::Answered { acked: true });
}

/// A re-INVITE from the caller with `direction` in its SDP.
fn reinvite(call_id: &str, our_tag: &str, cseq: u32, direction: &str) -> (crate::sip::transaction::TxKey, SipMessage) {
    let sdp = format!("v=0\r\no=a 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na={direction}\r\n");
    let raw = format!(
        "INVITE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKre{cseq}\r\n\
         From: <sip:1001@pbx.test>;tag=a\r\nTo: <sip:1002@pbx.test>;tag={our_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n\
         Contact: <sip:1001@127.0.0.1:6000>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let msg = SipMessage::parse_datagram(bytes::Bytes::from(raw)).unwrap();
    (
        crate::sip::transaction::TransactionLayer::server_key(&msg).unwrap(),
        msg,
    )
}

/// Puts the caller of `call_id` on hold (or back): the PBX answers the
/// re-INVITE itself, nothing goes to the callee.
fn hold(m: &mut CallEngine, call_id: &str, tag: &str, cseq: u32, direction: &str, now: Instant) -> Vec<Output> {
    let (key, req) = reinvite(call_id, tag, cseq, direction);
    m.on_in_dialog(key, req, Now::at(now)).unwrap();
    let out = effects(m);
    assert!(!out.iter().any(|o| matches!(o, Output::Request { .. })), "{out:?}");
    out
}

#[test]
fn the_2xx_to_a_reinvite_is_retransmitted_until_its_ack() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Instant::now();
    let (_, tag, _) = connected(&mut m, &cfg, now, invite_from("1001", "held", "1002"));
    let (_, ack) = from_caller("ACK", "held", &tag, "a");
    m.on_ack(&ack, peer(6000));
    let out = hold(&mut m, "held", &tag, 3, "sendonly", now);
    let ok = out.iter().find_map(|o| match o {
        Output::Respond { resp, .. } if resp.status() == Some(200) => Some(resp.clone()),
        _ => None,
    });
    let ok = ok.expect("the caller gets the 200");
    assert!(std::str::from_utf8(&ok.body).unwrap().contains("a=recvonly"));
    // The 200 is lost: it goes again after T1, 2·T1 …
    let t1 = cfg.sip.timers.t1;
    m.handle_timeout(Now::at(now + t1));
    let again = effects(&mut m);
    assert!(
        matches!(&again[..], [Output::Stateless { msg, .. }] if msg.to_bytes() == ok.to_bytes()),
        "{again:?}"
    );
    // The caller's ACK (CSeq 3) stops it.
    let (_, ack) = from_caller("ACK", "held", &tag, "a");
    assert_eq!(super::cseq_num(&ack), 3);
    m.on_ack(&ack, peer(6000));
    m.handle_timeout(Now::at(now + t1 * 70));
    assert!(
        effects(&mut m).is_empty(),
        "no more retransmissions, no hang-up for a missing ACK"
    );
    assert_eq!(m.views(Now::at(now))[0].state, "connected");
}

#[test]
fn a_held_call_is_not_hung_up_for_sending_no_rtp() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (held, tag, _) = connected(&mut m, &cfg, now, invite_from("1001", "held", "1002"));
    let (talking, _, _) = connected(&mut m, &cfg, now, invite_from("1001", "silent", "1002"));
    hold(&mut m, "held", &tag, 3, "inactive", now);
    media.0.lock().unwrap().idle = cfg.calls.media_timeout * 2;
    m.check_media(Now::at(now));
    assert!(m.calls.contains_key(&held), "on hold: no media timeout");
    assert!(!m.calls.contains_key(&talking), "not on hold and silent: hung up");
    effects(&mut m);
    // Taken off hold, the held call is timed out like any other.
    hold(&mut m, "held", &tag, 4, "sendrecv", now);
    m.check_media(Now::at(now));
    assert!(!m.calls.contains_key(&held));
}

#[test]
fn set_caller_id_takes_only_what_the_caller_id_rules_allow() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let id = started(&mut m, &cfg, "1001", invite(), Now::read());
    let _ = std::iter::from_fn(|| m.poll_output()).count();
    m.calls.get_mut(&id).unwrap().presentation.allowed = vec!["+34910000007".into()];
    m.set_caller_id(id, "+34666666666".into(), Some("Mallory".into()));
    assert_eq!(m.calls[&id].caller_number, "1001", "a number not allowed is ignored");
    assert_eq!(m.calls[&id].presentation.number, None);
    m.set_caller_id(id, "+34910000007".into(), None);
    assert_eq!(m.calls[&id].caller_number, "+34910000007");
    assert_eq!(m.calls[&id].presentation.number.as_deref(), Some("+34910000007"));
    // Each answered the script.
    let replies = std::iter::from_fn(|| m.poll_output())
        .filter(|o| matches!(o, Output::DialplanReply { reply: Reply::Done, .. }))
        .count();
    assert_eq!(replies, 2);
}
