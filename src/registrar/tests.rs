//! Registrar rules of RFC 3261 §10.3 under a fixed clock.

use super::*;
use crate::sip::transaction::TransportKind;
use bytes::Bytes;

const NOW: u64 = 1_800_000_000;

fn settings() -> RegistrarSettings {
    RegistrarSettings {
        min_expires: 60,
        max_expires: 3600,
        default_expires: 1800,
        max_contacts: 3,
    }
}

fn peer() -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr: "127.0.0.1:5070".parse().unwrap(),
    }
}

fn register(cseq: u32, call_id: &str, extra: &str) -> SipMessage {
    let raw = format!(
        "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK{cseq}\r\nFrom: <sip:1001@pbx.test>;tag=1\r\nTo: <sip:1001@pbx.test>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{extra}\r\n"
    );
    SipMessage::parse_datagram(Bytes::from(raw)).unwrap()
}

/// A REGISTER, stored and applied.
fn reg(r: &mut Registrar, cseq: u32, call_id: &str, extra: &str) -> Result<RegisterOutcome, SipError> {
    let out = r.register(
        &register(cseq, call_id, extra),
        "1001@pbx.test",
        peer(),
        &settings(),
        NOW,
    )?;
    r.apply(&out);
    Ok(out)
}

#[test]
fn nothing_changes_until_the_outcome_is_applied() {
    let mut r = Registrar::new();
    let planned = r
        .register(
            &register(1, "a", "Contact: <sip:1001@10.0.0.1>\r\n"),
            "1001@pbx.test",
            peer(),
            &settings(),
            NOW,
        )
        .unwrap();
    assert!(planned.store.is_some());
    assert_eq!(r.binding_count(), 0, "the store write has not succeeded yet");
    assert!(r.poll_output().is_none());
    r.apply(&planned);
    assert_eq!(r.binding_count(), 1);
    assert!(r.poll_output().is_some());
}

#[test]
fn several_contacts_and_expires_bounds() {
    let mut r = Registrar::new();
    let out = reg(
        &mut r,
        1,
        "a",
        "Contact: <sip:1001@10.0.0.1:5060>;expires=120, <sip:1001@10.0.0.2>\r\nExpires: 99999\r\n",
    )
    .unwrap();
    assert_eq!(out.current.len(), 2);
    assert_eq!(out.current[0].expires_at, NOW + 120);
    assert_eq!(out.current[1].expires_at, NOW + 3600, "clamped to max_expires");
    assert_eq!(out.store, Some(stored::put("1001@pbx.test", &out.current)));
    assert_eq!(
        contact_headers(&out.current, NOW)[0],
        "<sip:1001@10.0.0.1:5060>;expires=120"
    );
    let err = reg(&mut r, 2, "a", "Contact: <sip:1001@10.0.0.3>;expires=10\r\n").unwrap_err();
    assert_eq!(err.status, 423);
    assert_eq!(err.headers, vec![(HeaderName::MinExpires, "60".to_string())]);
    // A query (no Contact) lists without changing anything.
    let q = reg(&mut r, 3, "a", "").unwrap();
    assert_eq!((q.current.len(), q.store.is_none()), (2, true));
}

#[test]
fn removal_by_expires_zero_and_wildcard() {
    let mut r = Registrar::new();
    reg(&mut r, 1, "a", "Contact: <sip:1001@10.0.0.1>, <sip:1001@10.0.0.2>\r\n").unwrap();
    let out = reg(&mut r, 2, "a", "Contact: <sip:1001@10.0.0.1>\r\nExpires: 0\r\n").unwrap();
    assert_eq!(out.current.len(), 1);
    assert_eq!(
        reg(&mut r, 3, "a", "Contact: *\r\n").unwrap_err().status,
        400,
        "* needs Expires: 0"
    );
    let out = reg(&mut r, 3, "a", "Contact: *\r\nExpires: 0\r\n").unwrap();
    assert!(out.current.is_empty());
    assert_eq!(out.store, Some(stored::delete("1001@pbx.test")));
    assert_eq!(r.binding_count(), 0);
}

#[test]
fn out_of_order_cseq_is_refused_for_the_same_call_id() {
    let mut r = Registrar::new();
    reg(&mut r, 5, "a", "Contact: <sip:1001@10.0.0.1>\r\n").unwrap();
    assert_eq!(
        reg(&mut r, 5, "a", "Contact: <sip:1001@10.0.0.1>\r\n")
            .unwrap_err()
            .status,
        500
    );
    // A different Call-ID (device rebooted) may use any CSeq.
    assert!(reg(&mut r, 1, "b", "Contact: <sip:1001@10.0.0.1>\r\n").is_ok());
    assert_eq!(
        r.lookup("1001@pbx.test").len(),
        1,
        "same contact updated, not duplicated"
    );
}

#[test]
fn too_many_contacts_and_bad_values() {
    let mut r = Registrar::new();
    let four = "Contact: <sip:a@1.1.1.1>, <sip:b@1.1.1.1>, <sip:c@1.1.1.1>, <sip:d@1.1.1.1>\r\n";
    assert_eq!(reg(&mut r, 1, "a", four).unwrap_err().status, 403);
    assert_eq!(
        reg(&mut r, 2, "a", "Contact: <sip:a@1.1.1.1>\r\nExpires: soon\r\n")
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(reg(&mut r, 3, "a", "Contact: <http://x>\r\n").unwrap_err().status, 400);
}

#[test]
fn purge_and_restore_drop_expired_bindings() {
    let mut r = Registrar::new();
    reg(
        &mut r,
        1,
        "a",
        "Contact: <sip:1001@10.0.0.1>;expires=60, <sip:1001@10.0.0.2>;expires=600\r\n",
    )
    .unwrap();
    let ops = r.purge_expired(NOW + 61);
    let kept = r.lookup("1001@pbx.test");
    assert_eq!(kept.len(), 1);
    assert_eq!(ops, vec![stored::put("1001@pbx.test", kept)]);
    let ops = r.purge_expired(NOW + 601);
    assert_eq!(ops, vec![stored::delete("1001@pbx.test")]);
    let mut fresh = Registrar::new();
    let stored = vec![(
        "1001@pbx.test".to_string(),
        reg(&mut r, 2, "a", "Contact: <sip:x@1.1.1.1>\r\n")
            .unwrap()
            .current
            .to_vec(),
    )];
    assert!(fresh.restore(stored.clone(), NOW).is_empty());
    assert_eq!(fresh.binding_count(), 1);
    let mut late = Registrar::new();
    assert_eq!(late.restore(stored, NOW + 7200).len(), 1, "expired while down: purged");
    assert_eq!(late.binding_count(), 0);
}
