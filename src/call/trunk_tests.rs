//! Legs through trunks on virtual time: a trunk at `max_channels` is
//! skipped, a provider's challenge is answered once, and a provider's
//! failure moves the dial on or ends it.

use super::tests::{engine, invite_from, replies, respond_from_callee, started};
use super::*;
use crate::clock::Now;
use crate::dialplan::Reply;
use std::path::Path;

fn config() -> crate::config::Config {
    crate::config::Config::parse(
        Path::new("t.toml"),
        "[server]\nlisten = [\"127.0.0.1:5060\"]\n\
         [[trunks]]\nname = \"main\"\naddress = \"127.0.0.1:5091\"\nusername = \"acme\"\npassword = \"pw\"\nmax_channels = 1\n\
         [[trunks]]\nname = \"backup\"\naddress = \"127.0.0.1:5092\"\n\
         [[accounts]]\ndomain = \"pbx.test\"\ntrunks = [\"main\", \"backup\"]\n\
         [[accounts.users]]\nextension = \"1001\"\npassword = \"p\"\noutbound = true\n",
    )
    .unwrap()
}

/// A call from 1001 dialling 0611 out; the INVITE it sends, and where.
fn dial_out(m: &mut CallEngine, cfg: &crate::config::Config, call_id: &str, now: Now) -> (CallRef, Vec<Output>) {
    let id = started(m, cfg, "1001", invite_from("1001", call_id, "0611"), now);
    let _ = std::iter::from_fn(|| m.poll_output()).count();
    let registrar = crate::registrar::Registrar::new();
    let req = DialRequest {
        targets: vec!["0611".into()],
        timeout: None,
        external: true,
        trunks: cfg.trunks.clone(),
        trunk_named: false,
        account: &cfg.accounts[0],
        registrar: &registrar,
    };
    m.dial(id, req, now);
    (id, std::iter::from_fn(|| m.poll_output()).collect())
}

fn invite_in(out: &[Output]) -> (SipMessage, u16) {
    out.iter()
        .find_map(|o| match o {
            Output::Request { req, to } if req.method() == Some(&crate::sip::Method::Invite) => {
                Some((req.clone(), to.addr.port()))
            }
            _ => None,
        })
        .expect("an INVITE")
}

#[test]
fn a_full_trunk_is_skipped_a_challenge_answered_and_a_failure_ends_the_dial() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Now::read();
    let (_a, out) = dial_out(&mut m, &cfg, "call-a", now);
    let (first, port) = invite_in(&out);
    assert_eq!(port, 5091, "the first trunk");
    assert_eq!(first.request_uri(), Some("sip:0611@127.0.0.1:5091"));
    // main has one channel, in use: the second call goes to backup.
    let (_b, out) = dial_out(&mut m, &cfg, "call-b", now);
    let (second, port) = invite_in(&out);
    assert_eq!(port, 5092);
    // The provider challenges the first: the INVITE again, with credentials.
    let mut challenge = respond_from_callee(&first, 407, None);
    challenge.push_header(
        crate::sip::HeaderName::ProxyAuthenticate,
        "Digest realm=\"prov\", nonce=\"n1\", qop=\"auth\"",
    );
    let key = super::client_key(&first).unwrap();
    m.on_response(&key, challenge.clone(), now);
    let (again, port) = invite_in(&std::iter::from_fn(|| m.poll_output()).collect::<Vec<_>>());
    assert_eq!(port, 5091);
    assert_eq!(again.header(&crate::sip::HeaderName::CSeq), Some("2 INVITE"));
    assert_eq!(again.call_id(), first.call_id());
    assert!(again
        .header(&crate::sip::HeaderName::ProxyAuthorization)
        .unwrap()
        .contains("username=\"acme\""));
    // A second challenge is not answered again: the leg fails.
    m.on_response(
        &super::client_key(&again).unwrap(),
        respond_from_callee(&again, 407, None),
        now,
    );
    let out: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(out
        .iter()
        .all(|o| !matches!(o, Output::Request { req, .. } if req.method() == Some(&crate::sip::Method::Invite))));
    // backup fails with 503 and main is taken: nothing left, the dial fails.
    m.on_response(
        &super::client_key(&second).unwrap(),
        respond_from_callee(&second, 503, None),
        now,
    );
    let out: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(
        replies(&out)
            .iter()
            .any(|r| matches!(r, Reply::Dialed(o) if o.code == 503)),
        "{out:?}"
    );
}

#[test]
fn a_provider_that_never_answers_the_invite_passes_the_call_to_the_next_trunk() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Now::read();
    let (_a, out) = dial_out(&mut m, &cfg, "call-a", now);
    let (first, port) = invite_in(&out);
    assert_eq!(port, 5091);
    // Timer B fired: no answer at all from the first provider.
    m.on_tx_timeout(&super::client_key(&first).unwrap(), now);
    let out: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    let (_, port) = invite_in(&out);
    assert_eq!(port, 5092, "the next trunk");
}
