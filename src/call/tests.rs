//! The call engine without a network: INVITE in, outputs out, media
//! through a recording fake (see `fake_media`).

use super::*;
use crate::clock::Now;
use crate::config::Config;
use crate::dialplan::Reply;
use crate::media::EndpointId;
use crate::registrar::Registrar;
use crate::sip::response::response_to;
use crate::sip::transaction::TransportKind;
use crate::sip::{HeaderName, Method};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the engine asked of the media side.
#[derive(Default, Debug)]
pub(super) struct MediaLog {
    pub open: HashSet<EndpointId>,
    /// from → to
    pub links: HashMap<EndpointId, EndpointId>,
    pub played: Vec<(EndpointId, String)>,
    /// Endpoints hearing a looped sound.
    pub looping: HashSet<EndpointId>,
    /// Mixed bridges: members and whom each hears.
    pub mixes: HashMap<u64, Vec<(EndpointId, Vec<EndpointId>)>>,
    pub next_port: u16,
    /// What idle_for answers for every endpoint.
    pub idle: std::time::Duration,
}

/// A MediaControl with no sockets: records commands, hands out addresses.
#[derive(Clone, Default)]
pub(super) struct FakeMedia(pub Arc<Mutex<MediaLog>>);

impl MediaControl for FakeMedia {
    fn open(&mut self, id: EndpointId, _party: std::net::IpAddr, _now: Instant) -> Result<SocketAddr, String> {
        let mut log = self.0.lock().unwrap();
        log.open.insert(id);
        log.next_port += 2;
        Ok(SocketAddr::from(([127, 0, 0, 1], 20000 + log.next_port)))
    }
    fn set_remote(&mut self, _id: EndpointId, _rtp: Option<SocketAddr>) {}
    fn link(&mut self, from: EndpointId, to: EndpointId) {
        let mut log = self.0.lock().unwrap();
        log.links.insert(from, to);
        log.looping.remove(&to);
    }
    fn unlink(&mut self, from: EndpointId) {
        self.0.lock().unwrap().links.remove(&from);
    }
    fn play(&mut self, id: EndpointId, file: &str, _pt: u8, looped: bool) -> Result<(), String> {
        let mut log = self.0.lock().unwrap();
        log.played.push((id, file.to_string()));
        if looped {
            log.looping.insert(id);
        }
        Ok(())
    }
    fn stop_sound(&mut self, id: EndpointId) {
        self.0.lock().unwrap().looping.remove(&id);
    }
    fn sounds_playing(&self) -> usize {
        self.0.lock().unwrap().looping.len()
    }
    fn mix(&mut self, group: u64, members: &[(EndpointId, Vec<EndpointId>, u8)]) {
        let list = members.iter().map(|(m, h, _)| (*m, h.clone())).collect();
        self.0.lock().unwrap().mixes.insert(group, list);
    }
    fn unmix(&mut self, group: u64) {
        self.0.lock().unwrap().mixes.remove(&group);
    }
    fn close(&mut self, id: EndpointId, _now: Instant) {
        let mut log = self.0.lock().unwrap();
        log.open.remove(&id);
        log.looping.remove(&id);
        log.links.retain(|f, t| *f != id && *t != id);
    }
    fn stats(&self, _id: EndpointId) -> DirectionStats {
        DirectionStats::default()
    }
    fn idle_for(&self, _id: EndpointId, _now: Instant) -> std::time::Duration {
        self.0.lock().unwrap().idle
    }
    fn ports_in_use(&self) -> usize {
        self.0.lock().unwrap().open.len() * 2
    }
    fn housekeeping(&mut self, _now: Instant) {}
}

pub(super) const SDP_TEXT: &str = SDP;
const SDP: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

pub(super) fn config() -> Config {
    Config::parse(
        Path::new("t.toml"),
        "[server]\nlisten = [\"127.0.0.1:5060\"]\n[[accounts]]\ndomain = \"pbx.test\"\n\
         [[accounts.users]]\nextension = \"1001\"\npassword = \"p\"\n\
         [[accounts.users]]\nextension = \"1002\"\npassword = \"p\"\n\
         [[accounts.users]]\nextension = \"1003\"\npassword = \"p\"\n",
    )
    .unwrap()
}

pub(super) fn engine(cfg: &Config) -> (CallEngine, FakeMedia) {
    let media = FakeMedia::default();
    (
        CallEngine::new(
            CallConfig {
                calls: cfg.calls.clone(),
                timers: cfg.sip.timers,
                user_agent: cfg.sip.user_agent.clone(),
                listen: cfg.local_addrs(),
                monitor_after_transfer: ["1002@pbx.test".to_string()].into_iter().collect(),
            },
            Box::new(media.clone()),
        ),
        media,
    )
}

pub(super) fn peer(port: u16) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

pub(super) fn invite() -> (TxKey, SipMessage) {
    invite_from("1001", "call-a", "1002")
}

pub(super) fn invite_from(caller: &str, call_id: &str, to: &str) -> (TxKey, SipMessage) {
    let raw = format!(
        "INVITE sip:{to}@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK{call_id};rport\r\n\
         From: \"Olivia\" <sip:{caller}@pbx.test>;tag=a\r\nTo: <sip:{to}@pbx.test>\r\nCall-ID: {call_id}\r\n\
         CSeq: 2 INVITE\r\nContact: <sip:{caller}@127.0.0.1:6000>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let msg = SipMessage::parse_datagram(Bytes::from(raw)).unwrap();
    (
        crate::sip::transaction::TransactionLayer::server_key(&msg).unwrap(),
        msg,
    )
}

pub(super) fn registrar_with_1002(now: u64) -> Registrar {
    let mut r = Registrar::new();
    let reg = SipMessage::parse_datagram(Bytes::from(
        "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKr\r\nFrom: <sip:1002@pbx.test>;tag=r\r\n\
         To: <sip:1002@pbx.test>\r\nCall-ID: reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:1002@127.0.0.1:7000>\r\n\r\n",
    ))
    .unwrap();
    let settings = config().registrar;
    let out = r.register(&reg, "1002@pbx.test", peer(7000), &settings, now).unwrap();
    r.apply(&out);
    r
}

/// Outputs, without the domain events and live-call marks (they have
/// tests of their own).
pub(super) fn effects(m: &mut CallEngine) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output())
        .filter(|o| !matches!(o, Output::Event(_) | Output::Persist(_)))
        .collect()
}

/// The dialplan replies among `outputs`.
pub(super) fn replies(outputs: &[Output]) -> Vec<Reply> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::DialplanReply { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn respond_from_callee(req: &SipMessage, status: u16, sdp: Option<&str>) -> SipMessage {
    let mut r = response_to(req, status, None, "callee-tag");
    r.push_header(HeaderName::Contact, "<sip:1002@127.0.0.1:7000>");
    if let Some(s) = sdp {
        r.push_header(HeaderName::ContentType, "application/sdp");
        r.body = Bytes::from(s.replace("192.0.2.1", "192.0.2.2").replace("4000", "5000"));
    }
    r
}

/// A new call from `user` (INVITE `inv`), before its dialplan runs.
pub(super) fn started(
    m: &mut CallEngine,
    cfg: &Config,
    user: &str,
    (key, inv): (TxKey, SipMessage),
    now: Now,
) -> CallRef {
    let account = &cfg.accounts[0];
    m.start_call(
        key,
        inv,
        peer(6000),
        account,
        crate::call::Caller::user(account.user(user).unwrap(), account),
        now,
    )
    .unwrap()
}

/// Starts a call from 1001 and dials 1002; returns the callee INVITE.
pub(super) fn dialled(m: &mut CallEngine, cfg: &Config, now: Instant) -> (CallRef, TxKey, SipMessage) {
    dialled_as(m, cfg, now, invite())
}

pub(super) fn dialled_as(
    m: &mut CallEngine,
    cfg: &Config,
    now: Instant,
    (key, inv): (TxKey, SipMessage),
) -> (CallRef, TxKey, SipMessage) {
    let account = &cfg.accounts[0];
    let a_call_id = inv.call_id().unwrap().to_string();
    let from_user = inv.header(&HeaderName::From).unwrap().split("sip:").nth(1).unwrap()[..4].to_string();
    let id = m
        .start_call(
            key.clone(),
            inv,
            peer(6000),
            account,
            crate::call::Caller::user(account.user(&from_user).unwrap(), account),
            Now::at(now),
        )
        .unwrap();
    let e = effects(m);
    assert!(matches!(&e[..], [Output::StartDialplan { info, .. }] if info.to == "1002" && info.from == from_user));
    let registrar = registrar_with_1002(crate::unix_now());
    let req = DialRequest {
        targets: vec!["1002".into()],
        timeout: Some(Duration::from_secs(20)),
        external: false,
        trunks: Vec::new(),
        trunk_named: false,
        account,
        registrar: &registrar,
    };
    m.dial(id, req, Now::at(now));
    let e = effects(m);
    let [Output::Request { req, to }] = &e[..] else {
        panic!("{e:?}")
    };
    assert_eq!(to.addr, peer(7000).addr, "sent where the callee registered from");
    assert_eq!(req.request_uri(), Some("sip:1002@127.0.0.1:7000"));
    assert_ne!(
        req.call_id(),
        Some(a_call_id.as_str()),
        "the callee leg has its own Call-ID"
    );
    let body = std::str::from_utf8(&req.body).unwrap();
    assert!(
        body.contains("c=IN IP4 127.0.0.1") && !body.contains("192.0.2.1"),
        "{body}"
    );
    assert!(body.contains("telephone-event"), "codecs pass through");
    (id, key, req.clone())
}

/// The tag we gave the caller's leg (To of our responses).
pub(super) fn our_tag(outputs: &[Output]) -> String {
    outputs
        .iter()
        .find_map(|o| match o {
            Output::Respond { resp, .. } => crate::sip::dialog::tag_of(resp.header(&HeaderName::To)?),
            _ => None,
        })
        .expect("a response to the caller")
}

/// A request from the caller inside its dialog.
pub(super) fn from_caller(method: &str, call_id: &str, our_tag: &str, their_tag: &str) -> (TxKey, SipMessage) {
    let raw = format!(
        "{method} sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK{method}{their_tag}\r\n\
         From: <sip:1001@pbx.test>;tag={their_tag}\r\nTo: <sip:1002@pbx.test>;tag={our_tag}\r\nCall-ID: {call_id}\r\nCSeq: 3 {method}\r\n\r\n"
    );
    let msg = SipMessage::parse_datagram(Bytes::from(raw)).unwrap();
    (
        crate::sip::transaction::TransactionLayer::server_key(&msg).unwrap(),
        msg,
    )
}

/// Dials 1002 from 1001 and lets it answer; returns the caller's tag and
/// the callee's INVITE.
pub(super) fn connected(
    m: &mut CallEngine,
    cfg: &Config,
    now: Instant,
    inv: (TxKey, SipMessage),
) -> (CallRef, String, SipMessage) {
    let (id, _a_key, b_invite) = dialled_as(m, cfg, now, inv);
    let b_key = client_key(&b_invite).unwrap();
    m.on_response(&b_key, respond_from_callee(&b_invite, 200, Some(SDP)), Now::at(now));
    let e = effects(m);
    (id, our_tag(&e), b_invite)
}

#[test]
fn answered_call_bridges_and_caller_bye_ends_both_legs() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (_id, a_key, b_invite) = dialled(&mut m, &cfg, now);
    let b_key = client_key(&b_invite).unwrap();
    m.on_response(&b_key, respond_from_callee(&b_invite, 180, None), Now::at(now));
    let e = effects(&mut m);
    assert!(matches!(&e[..], [Output::Respond { key, resp }] if key == &a_key && resp.status() == Some(180)));
    m.on_response(&b_key, respond_from_callee(&b_invite, 200, Some(SDP)), Now::at(now));
    let e = effects(&mut m);
    let ack = e.iter().find_map(|x| match x {
        Output::Stateless { msg, .. } => Some(msg.clone()),
        _ => None,
    });
    let ack = ack.expect("callee 2xx ACKed");
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.request_uri(), Some("sip:1002@127.0.0.1:7000"));
    assert!(ack.header(&HeaderName::To).unwrap().contains("tag=callee-tag"));
    let ok = e.iter().find_map(|x| match x {
        Output::Respond { key, resp } if key == &a_key => Some(resp.clone()),
        _ => None,
    });
    let ok = ok.expect("caller answered");
    assert_eq!(ok.status(), Some(200));
    let body = std::str::from_utf8(&ok.body).unwrap();
    assert!(
        body.contains("c=IN IP4 127.0.0.1") && !body.contains("192.0.2.2"),
        "{body}"
    );
    assert!(replies(&e).is_empty(), "dial returns only when the call ends");
    assert_eq!(m.views(Now::at(now))[0].state, "connected");
    assert_eq!(media.0.lock().unwrap().links.len(), 2, "bridged both ways");
    // The callee retransmits its 2xx after the transaction ended: the same
    // ACK goes again, byte for byte (a new branch would be a new ACK).
    m.on_stray_response(&respond_from_callee(&b_invite, 200, Some(SDP)));
    let again = match &effects(&mut m)[..] {
        [Output::Stateless { msg, .. }] => msg.to_bytes(),
        e => panic!("{e:?}"),
    };
    assert_eq!(again, ack.to_bytes());
    // Caller hangs up.
    let tag = crate::sip::dialog::tag_of(ok.header(&HeaderName::To).unwrap()).unwrap();
    let (bye_key, bye) = from_caller("BYE", "call-a", &tag, "a");
    m.on_in_dialog(bye_key.clone(), bye, Now::at(now)).unwrap();
    let e = effects(&mut m);
    let to_callee = e.iter().find_map(|x| match x {
        Output::Request { req, .. } => Some(req.clone()),
        _ => None,
    });
    assert_eq!(to_callee.unwrap().method(), Some(&Method::Bye));
    let stored = e.iter().find_map(|x| match x {
        Output::WriteRecord { record, then } => Some((then.clone(), record.clone())),
        _ => None,
    });
    let (then, record) = stored.expect("200 to BYE after the record is stored");
    assert!(matches!(&then[..], [(key, resp)] if key == &bye_key && resp.status() == Some(200)));
    assert_eq!(
        (record.disposition.as_str(), record.hangup_side.as_str()),
        ("answered", "caller")
    );
    assert_eq!(record.legs.len(), 2, "a record per leg inside the conversation's");
    assert_eq!(
        replies(&e),
        vec![Reply::Dialed(crate::dialplan::DialOutcome::new("answered", 200))]
    );
    assert!(m.is_empty());
    assert_eq!(m.relay_ports_in_use(), 0);
    let (legs, _, _, bridges) = m.table_sizes();
    assert_eq!((legs, bridges), (0, 0), "no leg or bridge left behind");
}

#[test]
fn ring_timeout_cancels_and_reports_no_answer() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Instant::now();
    let (id, a_key, b_invite) = dialled(&mut m, &cfg, now);
    m.handle_timeout(Now::at(now + Duration::from_secs(21)));
    let e = effects(&mut m);
    let [Output::DialplanReply { reply, .. }, Output::Request { req, .. }] = &e[..] else {
        panic!("{e:?}")
    };
    assert_eq!(req.method(), Some(&Method::Cancel));
    assert_eq!(req.top_via(), b_invite.top_via(), "CANCEL reuses the INVITE's branch");
    assert_eq!(
        reply,
        &Reply::Dialed(crate::dialplan::DialOutcome::new("no-answer", 480))
    );
    // The script ends: the caller gets the dial's failure, after the record is written.
    m.script_done(id, Ok(()), Now::at(now));
    let e = effects(&mut m);
    assert!(matches!(&e[..], [Output::WriteRecord { record, then }]
        if then.len() == 1 && then[0].0 == a_key && then[0].1.status() == Some(480) && record.disposition == "no-answer"));
}

#[test]
fn busy_callee_maps_to_486_and_a_late_cancel_is_harmless() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Instant::now();
    let (id, a_key, b_invite) = dialled(&mut m, &cfg, now);
    let b_key = client_key(&b_invite).unwrap();
    m.on_response(&b_key, respond_from_callee(&b_invite, 486, None), Now::at(now));
    assert_eq!(
        replies(&effects(&mut m)),
        vec![Reply::Dialed(crate::dialplan::DialOutcome::new("busy", 486))]
    );
    m.on_cancel(&a_key, Now::at(now));
    let e = effects(&mut m);
    assert!(matches!(&e[..], [Output::WriteRecord { then, record }]
        if then[0].1.status() == Some(487) && record.disposition == "cancelled"));
    m.script_done(id, Ok(()), Now::at(now));
    assert!(effects(&mut m).is_empty(), "the call is already over");
}

#[test]
fn requests_for_unknown_dialogs_get_481_and_scripts_errors_500() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let (key, bye) = from_caller("BYE", "nope", "2", "1");
    assert_eq!(m.on_in_dialog(key, bye, Now::read()).unwrap_err().status, 481);
    let id = started(&mut m, &cfg, "1001", invite(), Now::read());
    effects(&mut m);
    m.script_done(
        id,
        Err(crate::dialplan::DialplanError::Script("x.lua:1: boom".into())),
        Now::read(),
    );
    let e = effects(&mut m);
    assert!(matches!(&e[..], [Output::WriteRecord { then, .. }] if then[0].1.status() == Some(500)));
}

#[test]
fn hold_is_answered_here_the_other_party_hears_music_and_resume_relinks() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (id, tag, _) = connected(&mut m, &cfg, now, invite());
    let (a, b) = (m.calls[&id].origin, m.calls[&id].connected.unwrap());
    let reinvite = |direction: &str| {
        let (key, mut req) = from_caller("INVITE", "call-a", &tag, "a");
        req.push_header(HeaderName::ContentType, "application/sdp");
        req.body = Bytes::from(format!("{SDP}a={direction}\r\n"));
        (key, req)
    };
    let (key, req) = reinvite("sendonly");
    m.on_in_dialog(key, req, Now::at(now)).unwrap();
    let out = effects(&mut m);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Request { .. })),
        "the callee is not re-INVITEd: {out:?}"
    );
    let ok = out
        .iter()
        .find_map(|o| match o {
            Output::Respond { resp, .. } => Some(resp.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ok.status(), Some(200));
    assert!(String::from_utf8_lossy(&ok.body).contains("a=recvonly"));
    {
        let log = media.0.lock().unwrap();
        assert!(log.links.is_empty(), "unlinked: {:?}", log.links);
        assert!(log.looping.contains(&b.endpoint()), "the callee hears music");
    }
    let (key, req) = reinvite("sendrecv");
    m.on_in_dialog(key, req, Now::at(now)).unwrap();
    effects(&mut m);
    let log = media.0.lock().unwrap();
    assert!(log.looping.is_empty(), "music stopped");
    assert_eq!(log.links.get(&a.endpoint()), Some(&b.endpoint()));
    assert_eq!(log.links.get(&b.endpoint()), Some(&a.endpoint()));
}

#[test]
fn a_monitor_is_mixed_in_by_role_and_hung_up_with_the_call() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (id, tag, _) = connected(&mut m, &cfg, now, invite());
    let (customer, agent) = (m.calls[&id].origin, m.calls[&id].connected.unwrap());
    let sup = started(
        &mut m,
        &cfg,
        "1003",
        invite_from("1003", "sup", "*821002"),
        Now::at(now),
    );
    effects(&mut m);
    m.monitor(sup, agent, MonitorMode::Whisper, Now::at(now)).unwrap();
    let sup_leg = m.calls[&sup].origin;
    {
        let log = media.0.lock().unwrap();
        assert!(log.links.is_empty(), "mixed, not linked: {:?}", log.links);
        let mix = log.mixes.values().next().expect("a mix");
        let hears = |leg: LegId| {
            let mut h = mix.iter().find(|(e, _)| *e == leg.endpoint()).unwrap().1.clone();
            h.sort();
            h
        };
        assert_eq!(
            hears(customer),
            vec![agent.endpoint()],
            "the customer never hears the whisper"
        );
        let mut both = vec![customer.endpoint(), sup_leg.endpoint()];
        both.sort();
        assert_eq!(hears(agent), both, "the agent hears the customer and the whisper");
        let mut talkers = vec![customer.endpoint(), agent.endpoint()];
        talkers.sort();
        assert_eq!(hears(sup_leg), talkers);
    }
    // The customer hangs up: the agent and the monitor go with the call.
    let (key, bye) = from_caller("BYE", "call-a", &tag, "a");
    m.on_in_dialog(key, bye, Now::at(now)).unwrap();
    let out = effects(&mut m);
    let byes = out
        .iter()
        .filter(|o| matches!(o, Output::Request { req, .. } if req.method() == Some(&Method::Bye)))
        .count();
    assert_eq!(byes, 2, "to the agent and the supervisor: {out:?}");
    assert!(m.calls.is_empty());
    assert!(media.0.lock().unwrap().mixes.is_empty());
}

const CODES: crate::call::DtmfCodes<'static> = crate::call::DtmfCodes {
    blind: "##",
    attended: "*2",
};

#[test]
fn a_monitor_switches_mode_with_a_digit() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (id, _, _) = connected(&mut m, &cfg, now, invite());
    let agent = m.calls[&id].connected.unwrap();
    let sup = started(
        &mut m,
        &cfg,
        "1003",
        invite_from("1003", "sup", "*811002"),
        Now::at(now),
    );
    m.monitor(sup, agent, MonitorMode::Listen, Now::at(now)).unwrap();
    let sup_leg = m.calls[&sup].origin;
    let agent_hears = |media: &FakeMedia| {
        let log = media.0.lock().unwrap();
        let mix = log.mixes.values().next().unwrap().clone();
        mix.into_iter().find(|(e, _)| *e == agent.endpoint()).unwrap().1
    };
    assert!(
        !agent_hears(&media).contains(&sup_leg.endpoint()),
        "listening: not heard"
    );
    m.on_dtmf(sup_leg.endpoint(), '2', CODES, Now::at(now));
    assert!(
        agent_hears(&media).contains(&sup_leg.endpoint()),
        "whispering: heard by the agent"
    );
    m.on_dtmf(sup_leg.endpoint(), '1', CODES, Now::at(now));
    assert!(!agent_hears(&media).contains(&sup_leg.endpoint()), "listening again");
    // A digit from a leg that is not monitoring changes nothing.
    m.on_dtmf(agent.endpoint(), '3', CODES, Now::at(now));
    assert!(!agent_hears(&media).contains(&sup_leg.endpoint()));
}

#[test]
fn a_consult_that_fails_or_is_cancelled_returns_the_agent_to_the_customer() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (id, _, _) = connected(&mut m, &cfg, now, invite());
    let (customer, agent) = (m.calls[&id].origin, m.calls[&id].connected.unwrap());
    let press = |m: &mut CallEngine, keys: &str| {
        for k in keys.chars() {
            m.on_dtmf(agent.endpoint(), k, CODES, Now::at(now));
        }
    };
    let reg = registrar_with_1002(Now::at(now).unix_s());
    for ending in ["busy", "cancelled"] {
        press(&mut m, "*21002#");
        let out = effects(&mut m);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Consult { number, .. } if number == "1002")),
            "{out:?}"
        );
        {
            let log = media.0.lock().unwrap();
            assert!(
                log.looping.contains(&customer.endpoint()),
                "the customer waits with music"
            );
            assert!(!log.links.contains_key(&agent.endpoint()));
        }
        m.consult(
            id,
            user_contacts(&reg, &cfg.accounts[0], "1002"),
            Duration::from_secs(20),
            Now::at(now),
        );
        let invite = first_invite(&effects(&mut m));
        let key = client_key(&invite).unwrap();
        if ending == "busy" {
            m.on_response(&key, respond_from_callee(&invite, 486, None), Now::at(now));
        } else {
            m.on_response(&key, respond_from_callee(&invite, 200, Some(SDP)), Now::at(now));
            press(&mut m, "*0");
        }
        effects(&mut m);
        let log = media.0.lock().unwrap();
        assert!(log.looping.is_empty(), "{ending}: the music stopped");
        assert_eq!(log.links.get(&agent.endpoint()), Some(&customer.endpoint()), "{ending}");
        assert_eq!(log.links.get(&customer.endpoint()), Some(&agent.endpoint()), "{ending}");
    }
}

#[test]
fn an_agent_who_stays_after_a_blind_transfer_listens_to_the_new_call() {
    let cfg = config();
    let (mut m, media) = engine(&cfg);
    let now = Instant::now();
    let (id, _, _) = connected(&mut m, &cfg, now, invite());
    let (customer, agent) = (m.calls[&id].origin, m.calls[&id].connected.unwrap());
    for k in "##1002#".chars() {
        m.on_dtmf(agent.endpoint(), k, CODES, Now::at(now));
    }
    let out = effects(&mut m);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Request { req, .. } if req.method() == Some(&Method::Bye))),
        "1002 stays (monitor_after_transfer): {out:?}"
    );
    let new = m.legs[&customer].conversation;
    assert_ne!(new, id);
    // The new conversation's dialplan dials; the target answers.
    let invite = dial_1002(&mut m, &cfg, new, now);
    m.on_response(
        &client_key(&invite).unwrap(),
        respond_from_callee(&invite, 200, Some(SDP)),
        Now::at(now),
    );
    effects(&mut m);
    let taker = m.calls[&new].connected.unwrap();
    let log = media.0.lock().unwrap();
    let mix = log.mixes.values().next().expect("mixed: the agent listens");
    let mut heard = mix.iter().find(|(e, _)| *e == agent.endpoint()).unwrap().1.clone();
    heard.sort();
    let mut both = vec![customer.endpoint(), taker.endpoint()];
    both.sort();
    assert_eq!(heard, both);
}

#[test]
fn a_transferred_party_is_offered_on_with_the_codec_it_agreed_to() {
    let cfg = config();
    let (mut m, _media) = engine(&cfg);
    let now = Instant::now();
    // The caller offers PCMU and PCMA; the callee answers PCMA only.
    let (key, mut inv) = invite();
    inv.body = Bytes::from(SDP.replace("RTP/AVP 0 101", "RTP/AVP 0 8 101"));
    let (id, _, b_invite) = dialled_as(&mut m, &cfg, now, (key, inv));
    let answer = SDP.replace("RTP/AVP 0 101", "RTP/AVP 8 101");
    m.on_response(
        &client_key(&b_invite).unwrap(),
        respond_from_callee(&b_invite, 200, Some(&answer)),
        Now::at(now),
    );
    effects(&mut m);
    let (caller, callee) = (m.calls[&id].origin, m.calls[&id].connected.unwrap());
    // The caller sends the callee elsewhere by DTMF.
    for k in "##1002#".chars() {
        m.on_dtmf(caller.endpoint(), k, CODES, Now::at(now));
    }
    effects(&mut m);
    let moved = m.legs[&callee].conversation;
    let offer = dial_1002(&mut m, &cfg, moved, now);
    let body = String::from_utf8_lossy(&offer.body).to_string();
    assert!(
        body.contains("RTP/AVP 8 101") && !body.contains("RTP/AVP 0 8"),
        "{body}"
    );
}

/// Dials 1002 (registered) for conversation `id`; the INVITE that goes out.
pub(super) fn dial_1002(m: &mut CallEngine, cfg: &Config, id: CallRef, now: Instant) -> SipMessage {
    let reg = registrar_with_1002(Now::at(now).unix_s());
    let req = DialRequest {
        targets: vec!["1002".into()],
        timeout: None,
        external: false,
        trunks: Vec::new(),
        trunk_named: false,
        account: &cfg.accounts[0],
        registrar: &reg,
    };
    m.dial(id, req, Now::at(now));
    first_invite(&effects(m))
}

/// The first INVITE among `outputs`.
pub(super) fn first_invite(outputs: &[Output]) -> SipMessage {
    outputs
        .iter()
        .find_map(|o| match o {
            Output::Request { req, .. } if req.method() == Some(&Method::Invite) => Some(req.clone()),
            _ => None,
        })
        .expect("an INVITE goes out")
}
