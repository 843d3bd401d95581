//! Permission rules and the offline queue, without a network.

use super::*;
use crate::config::{ChatSettings, Config};
use crate::registrar::Registrar;
use crate::sip::transaction::TransportKind;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;

fn config() -> Config {
    Config::parse(
        Path::new("t.toml"),
        "[[accounts]]\ndomain = \"pbx.test\"\nchat = true\n\
         [[accounts.users]]\nextension = \"1001\"\npassword = \"p\"\nrole = \"owner\"\n\
         [[accounts.users]]\nextension = \"1003\"\npassword = \"p\"\nrole = \"supervisor\"\n\
         [[accounts.users]]\nextension = \"1004\"\npassword = \"p\"\nrole = \"agent\"\n\
         [[accounts.users]]\nextension = \"1005\"\npassword = \"p\"\nrole = \"agent\"\n\
         [[accounts.groups]]\nnumber = \"2001\"\nmembers = [\"1004\"]\nsupervisors = [\"1003\"]\n\
         [[accounts.groups]]\nnumber = \"2002\"\nmembers = [\"1005\"]\n",
    )
    .unwrap()
}

const LIMITS: ChatSettings = ChatSettings {
    max_message_bytes: 64,
    messages_per_minute: 3,
    max_waiting_per_user: 3,
};

fn message(body: &str, ctype: &str) -> SipMessage {
    let raw = format!(
        "MESSAGE sip:x@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@pbx.test>;tag=1\r\nTo: <sip:x@pbx.test>\r\nCall-ID: m\r\nCSeq: 1 MESSAGE\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    SipMessage::parse_datagram(Bytes::from(raw)).unwrap()
}

#[test]
fn group_rules_follow_roles() {
    let cfg = config();
    let a = &cfg.accounts[0];
    let (sales, support) = (a.group("2001").unwrap(), a.group("2002").unwrap());
    let u = |e: &str| a.user(e).unwrap();
    assert!(
        may_use_group(sales, u("1004")) && !may_use_group(support, u("1004")),
        "agents: own groups"
    );
    assert!(
        may_use_group(sales, u("1003")) && !may_use_group(support, u("1003")),
        "supervisors: groups reporting to them"
    );
    assert!(
        may_use_group(sales, u("1001")) && may_use_group(support, u("1001")),
        "owners: all"
    );
    assert_eq!(group_recipients(sales, "1004"), vec!["1003"]);
    assert_eq!(group_recipients(sales, "1001"), vec!["1003", "1004"]);
}

#[test]
fn limits_and_unknown_recipients() {
    let cfg = config();
    let a = &cfg.accounts[0];
    let mut chat = ChatService::new(vec!["127.0.0.1:5060".parse().unwrap()].into());
    let sender = a.user("1004").unwrap();
    let now = Instant::now();
    let status = |r: Result<Accepted, SipError>| r.map(|_| 202).unwrap_or_else(|e| e.status);
    assert_eq!(
        status(chat.accept(
            &message(&"x".repeat(65), "text/plain"),
            a,
            sender,
            "1005",
            LIMITS,
            crate::clock::Now::at(now)
        )),
        413
    );
    assert_eq!(
        status(chat.accept(
            &message("hi", "application/json"),
            a,
            sender,
            "1005",
            LIMITS,
            crate::clock::Now::at(now)
        )),
        415
    );
    assert_eq!(
        status(chat.accept(
            &message("hi", "text/plain"),
            a,
            sender,
            "7777",
            LIMITS,
            crate::clock::Now::at(now)
        )),
        404
    );
    assert_eq!(
        status(chat.accept(
            &message("hi", "text/plain"),
            a,
            sender,
            "2002",
            LIMITS,
            crate::clock::Now::at(now)
        )),
        403
    );
    for _ in 0..3 {
        assert_eq!(
            status(chat.accept(
                &message("hi", "text/plain;charset=UTF-8"),
                a,
                sender,
                "1005",
                LIMITS,
                crate::clock::Now::at(now)
            )),
            202
        );
    }
    assert_eq!(
        status(chat.accept(
            &message("hi", "text/plain"),
            a,
            sender,
            "1005",
            LIMITS,
            crate::clock::Now::at(now)
        )),
        503,
        "rate limit"
    );
    let later = now + Duration::from_secs(61);
    assert_eq!(
        status(chat.accept(
            &message("hi", "text/plain"),
            a,
            sender,
            "1005",
            LIMITS,
            crate::clock::Now::at(later)
        )),
        202
    );
}

#[test]
fn offline_queue_delivers_in_order_once_and_keeps_failures() {
    let cfg = config();
    let a = &cfg.accounts[0];
    let mut chat = ChatService::new(vec!["127.0.0.1:5060".parse().unwrap()].into());
    let now = Instant::now();
    // What the driver's store would hold: the queue keeps ids only.
    let mut store = HashMap::new();
    let deliver = |chat: &mut ChatService, store: &HashMap<u64, ChatMessage>, registrar: &Registrar| {
        if let Some(id) = chat.next_for("1005@pbx.test", registrar) {
            chat.push("1005@pbx.test", &store[&id], a, registrar, "sb");
        }
    };
    for body in ["one", "two"] {
        let acc = chat
            .accept(
                &message(body, "text/plain"),
                a,
                a.user("1001").unwrap(),
                "1005",
                LIMITS,
                crate::clock::Now::at(now),
            )
            .unwrap();
        assert_eq!(
            acc.ops,
            [
                stored::message(&acc.message),
                stored::pending("1005@pbx.test", acc.message.id)
            ]
        );
        assert_eq!(acc.recipients, ["1005@pbx.test"]);
        chat.commit(&acc);
        store.insert(acc.message.id, acc.message);
    }
    let mut registrar = Registrar::new();
    deliver(&mut chat, &store, &registrar);
    assert!(chat.poll_output().is_none(), "nobody registered: stays queued");
    let reg = SipMessage::parse_datagram(Bytes::from(
        "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\r\nFrom: <sip:1005@pbx.test>;tag=r\r\nTo: <sip:1005@pbx.test>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:1005@127.0.0.1:7005>\r\n\r\n",
    ))
    .unwrap();
    let peer = Peer {
        transport: TransportKind::Udp,
        addr: "127.0.0.1:7005".parse().unwrap(),
    };
    let out = registrar
        .register(&reg, "1005@pbx.test", peer, &cfg.registrar, crate::unix_now())
        .unwrap();
    registrar.apply(&out);
    deliver(&mut chat, &store, &registrar);
    let d: Vec<Delivery> = std::iter::from_fn(|| chat.poll_output()).collect();
    // One at a time, oldest first: the second waits for the first's answer.
    assert_eq!(
        d.iter().map(|x| x.req.body.clone()).collect::<Vec<_>>(),
        vec![Bytes::from("one")]
    );
    // A second registration while it is in flight sends nothing again.
    deliver(&mut chat, &store, &registrar);
    assert!(chat.poll_output().is_none());
    // The first is taken: the second goes (the driver delivers again on a 2xx).
    assert!(matches!(
        chat.on_delivery_result("1005@pbx.test", d[0].id, 200),
        Some(op) if op == stored::delivered("1005@pbx.test", d[0].id)
    ));
    assert_eq!(
        chat.on_delivery_result("1005@pbx.test", d[0].id, 200),
        None,
        "a second 2xx changes nothing"
    );
    deliver(&mut chat, &store, &registrar);
    let second: Vec<Delivery> = std::iter::from_fn(|| chat.poll_output()).collect();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].req.body, Bytes::from("two"));
    // It fails: it stays queued and goes again at the next registration.
    assert_eq!(chat.on_delivery_result("1005@pbx.test", second[0].id, 480), None);
    deliver(&mut chat, &store, &registrar);
    let again: Vec<Delivery> = std::iter::from_fn(|| chat.poll_output()).collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].req.body, Bytes::from("two"));
    assert_eq!(chat.pending_count(), 1);
}

#[test]
fn a_user_with_too_many_waiting_messages_refuses_more_and_keeps_the_oldest() {
    let cfg = config();
    let a = &cfg.accounts[0];
    let mut chat = ChatService::new(vec!["127.0.0.1:5060".parse().unwrap()].into());
    let now = std::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..LIMITS.max_waiting_per_user {
        let later = crate::clock::Now::at(now + std::time::Duration::from_secs(60 * i as u64));
        let acc = chat
            .accept(
                &message("hi", "text/plain"),
                a,
                a.user("1001").unwrap(),
                "1005",
                LIMITS,
                later,
            )
            .unwrap();
        chat.commit(&acc);
        ids.push(acc.message.id);
    }
    let later = crate::clock::Now::at(now + std::time::Duration::from_secs(3600));
    let full = chat.accept(
        &message("one more", "text/plain"),
        a,
        a.user("1001").unwrap(),
        "1005",
        LIMITS,
        later,
    );
    let err = full.expect_err("refused");
    assert_eq!(err.status, 486);
    assert!(err.reason.as_deref().unwrap_or("").contains("1005"), "{err:?}");
    assert_eq!(chat.pending_count(), LIMITS.max_waiting_per_user, "the oldest are kept");
}
