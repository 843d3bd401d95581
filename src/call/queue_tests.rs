//! Queue calls in the engine: the caller answered and hearing music, an
//! offer to an agent, the bridge on the agent's answer, the offer's end
//! reported; a caller who hangs up while an offer rings.

use super::tests::*;
use super::*;
use crate::clock::Now;
use crate::events::OfferOutcome;
use crate::sip::HeaderName;
use std::time::{Duration, Instant};

fn offers_ended(out: &[Output]) -> Vec<(String, OfferOutcome)> {
    out.iter()
        .filter_map(|o| match o {
            Output::OfferEnded { agent, outcome, .. } => Some((agent.clone(), *outcome)),
            _ => None,
        })
        .collect()
}

/// A caller of 3001 waiting in queue "Support", and an offer ringing 1002.
fn waiting_with_offer(m: &mut CallEngine, cfg: &crate::config::Config, now: Now) -> (CallRef, SipMessage) {
    let id = started(m, cfg, "1001", invite_from("1001", "call-q", "3001"), now);
    effects(m);
    assert!(m.enter_queue(id, "3001", "Support", "moh.wav", now));
    let out = effects(m);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Respond { resp, .. } if resp.status() == Some(200))),
        "the caller is answered at once: {out:?}"
    );
    let reg = registrar_with_1002(now.unix_s());
    m.offer(
        id,
        user_contacts(&reg, &cfg.accounts[0], "1002"),
        Duration::from_secs(15),
        now,
    );
    (id, first_invite(&effects(m)))
}

#[test]
fn a_queued_caller_hears_music_until_the_agent_answers_and_is_bridged_to_them() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Now::at(Instant::now());
    let (id, agent_invite) = waiting_with_offer(&mut m, &cfg, now);
    let origin = m.calls[&id].origin;
    assert!(
        media.0.lock().unwrap().looping.contains(&origin.endpoint()),
        "music plays"
    );
    // The agent sees the queue and the caller (the user's name, else the number).
    assert_eq!(agent_invite.header(&HeaderName::Other("X-Queue".into())), Some("3001"));
    assert!(
        agent_invite
            .header(&HeaderName::From)
            .unwrap()
            .starts_with("\"Support: 1001\""),
        "{:?}",
        agent_invite.header(&HeaderName::From)
    );
    // Offered the codec the caller was answered with, not the caller's list.
    let body = String::from_utf8_lossy(&agent_invite.body).to_string();
    assert!(body.contains("m=audio") && body.contains("RTP/AVP 0 101"), "{body}");
    let key = client_key(&agent_invite).unwrap();
    m.on_response(&key, respond_from_callee(&agent_invite, 180, None), now);
    m.on_response(&key, respond_from_callee(&agent_invite, 200, Some(SDP_TEXT)), now);
    let out = effects(&mut m);
    let agent_leg = m.calls[&id].connected.expect("connected");
    assert_eq!(
        offers_ended(&out),
        vec![("1002".to_string(), OfferOutcome::Answered { leg: agent_leg.0 })]
    );
    // No second answer to the caller; the music stopped; both ways linked.
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Respond { resp, .. } if resp.status() == Some(200))));
    let log = media.0.lock().unwrap();
    assert!(log.looping.is_empty(), "music stopped");
    assert_eq!(log.links.get(&origin.endpoint()), Some(&agent_leg.endpoint()));
    assert_eq!(log.links.get(&agent_leg.endpoint()), Some(&origin.endpoint()));
}

#[test]
fn an_offer_rings_out_and_a_caller_who_hangs_up_cancels_the_next() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Now::at(Instant::now());
    let (id, _first) = waiting_with_offer(&mut m, &cfg, now);
    let later = Now {
        mono: now.mono + Duration::from_secs(15),
        unix_ms: now.unix_ms + 15_000,
    };
    m.handle_timeout(later);
    let out = effects(&mut m);
    assert_eq!(offers_ended(&out), vec![("1002".to_string(), OfferOutcome::NoAnswer)]);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Request { req, .. } if req.method() == Some(&crate::sip::Method::Cancel))));
    // Offered again; the caller hangs up while it rings.
    let reg = registrar_with_1002(now.unix_s());
    m.offer(
        id,
        user_contacts(&reg, &cfg.accounts[0], "1002"),
        Duration::from_secs(15),
        later,
    );
    effects(&mut m);
    let tag = m.legs[&m.calls[&id].origin].local_tag.clone();
    let (key, bye) = from_caller("BYE", "call-q", &tag, "a");
    m.on_in_dialog(key, bye, later).unwrap();
    let out: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert_eq!(offers_ended(&out), vec![("1002".to_string(), OfferOutcome::Failed)]);
    let record = out
        .iter()
        .find_map(|o| match o {
            Output::WriteRecord { record, .. } => Some(record.clone()),
            _ => None,
        })
        .expect("a record");
    assert_eq!(record.queues.len(), 1);
    assert_eq!(
        (
            record.queues[0].queue.as_str(),
            record.queues[0].outcome.as_str(),
            record.queues[0].wait_s
        ),
        ("3001", "abandoned", 15)
    );
    assert!(m.calls.is_empty());
}
