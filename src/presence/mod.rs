//! Presence over SUBSCRIBE/NOTIFY (RFC 6665), sans-IO: the `presence`
//! package with PIDF bodies (RFC 3863) and the `dialog` package (RFC 4235,
//! for busy-lamp fields) on the users of an account. A user's state follows
//! their registrations (online/offline) and calls (ringing, on a call).

use crate::sip::dialog::{Dialog, DialogId};
use crate::sip::response::{random_token, response_to};
use crate::sip::transaction::Peer;
use crate::sip::{HeaderName, Method, SipError, SipMessage};
use foldhash::{HashMap, HashMapExt};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// RFC 6665 §7.2 event packages we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    Presence,
    Dialog,
}

impl Package {
    pub fn parse(event: &str) -> Option<Package> {
        match event
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "presence" => Some(Package::Presence),
            "dialog" => Some(Package::Dialog),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Package::Presence => "presence",
            Package::Dialog => "dialog",
        }
    }
}

/// What a watched user is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserState {
    pub registered: bool,
    /// None, or "early" (ringing) / "confirmed" (talking), RFC 4235 §3.7.1.
    pub call: Option<&'static str>,
    /// The user's agent state when it is one the call state does not
    /// show: "acw" or "not_ready".
    pub agent: Option<&'static str>,
}

struct Subscription {
    package: Package,
    /// `ext@domain` of the watched user.
    target: String,
    dialog: Dialog,
    expires_at: Instant,
    /// dialog-info version (RFC 4235 §4.1), increments per NOTIFY.
    version: u32,
    last: Option<UserState>,
}

pub const MIN_EXPIRES: u32 = 60;
pub const MAX_EXPIRES: u32 = 3600;

/// A subscription's dialog id (RFC 6665 §4.1.2.2 matches in-dialog
/// SUBSCRIBEs by it): Call-ID, our tag and the watcher's tag.
pub type SubscriptionId = DialogId;

pub struct PresenceService {
    subs: HashMap<SubscriptionId, Subscription>,
    out: VecDeque<(SubscriptionId, SipMessage, Peer)>,
    local: crate::sip::dialog::LocalAddrs,
}

impl PresenceService {
    pub fn new(local: crate::sip::dialog::LocalAddrs) -> PresenceService {
        PresenceService {
            subs: HashMap::new(),
            out: VecDeque::new(),
            local,
        }
    }

    /// The next NOTIFY to send, with the subscription it belongs to (its
    /// failure ends the subscription: see [`PresenceService::notify_failed`]).
    pub fn poll_output(&mut self) -> Option<(SubscriptionId, SipMessage, Peer)> {
        self.out.pop_front()
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Users someone is watching.
    pub fn watched(&self) -> Vec<String> {
        let mut v: Vec<String> = self.subs.values().map(|s| s.target.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The Expires a SUBSCRIBE asks for, bounded (RFC 6665 §4.2.1.1).
    pub fn granted_expires(req: &SipMessage) -> Result<u32, SipError> {
        let asked = match req.header(&HeaderName::Expires) {
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map_err(|_| SipError::with_reason(400, "Bad Expires"))?,
            None => MAX_EXPIRES,
        };
        if asked != 0 && asked < MIN_EXPIRES {
            return Err(SipError::new(423).header(HeaderName::MinExpires, MIN_EXPIRES.to_string()));
        }
        Ok(asked.min(MAX_EXPIRES))
    }

    /// A new subscription (out of dialog SUBSCRIBE, already authorized):
    /// returns the 200 and queues the initial NOTIFY (§4.2.1).
    pub fn subscribe(
        &mut self,
        req: &SipMessage,
        from: Peer,
        package: Package,
        target: &str,
        state: UserState,
        now: Instant,
    ) -> Result<SipMessage, SipError> {
        let expires = Self::granted_expires(req)?;
        let call_id = req
            .call_id()
            .ok_or_else(|| SipError::with_reason(400, "Missing Call-ID"))?
            .to_string();
        let tag = random_token();
        let via_addr = crate::sip::dialog::local_addr_for(&self.local, from);
        let dialog = Dialog {
            call_id: call_id.clone(),
            local: format!("{};tag={tag}", req.header(&HeaderName::To).unwrap_or("")),
            remote: req.header(&HeaderName::From).unwrap_or("").to_string(),
            remote_target: crate::sip::dialog::contact_uri(req)
                .ok_or_else(|| SipError::with_reason(400, "Missing Contact"))?,
            peer: from,
            local_cseq: 0,
            via_addr,
            route_set: crate::sip::dialog::route_set_of_request(req),
        };
        let mut resp = response_to(req, 200, None, &tag);
        for rr in &dialog.route_set {
            resp.push_header(HeaderName::RecordRoute, rr.clone());
        }
        resp.push_header(HeaderName::Expires, expires.to_string());
        resp.push_header(HeaderName::Contact, crate::sip::dialog::contact(from, via_addr));
        let sub = Subscription {
            package,
            target: target.to_string(),
            dialog,
            expires_at: now + Duration::from_secs(u64::from(expires)),
            version: 0,
            last: None,
        };
        let id = sub.dialog.id();
        self.subs.insert(id.clone(), sub);
        self.notify(&id, state, now);
        if expires == 0 {
            self.subs.remove(&id);
        }
        Ok(resp)
    }

    /// The subscription an in-dialog SUBSCRIBE names, if it names one by
    /// its full dialog id and comes from the watcher's address (a request
    /// from elsewhere could end or redirect someone else's subscription).
    pub fn subscription_of(&self, req: &SipMessage, from: Peer) -> Result<SubscriptionId, SipError> {
        let id = DialogId::of_request(req).ok_or_else(|| SipError::new(481))?;
        let sub = self.subs.get(&id).ok_or_else(|| SipError::new(481))?;
        if sub.dialog.peer.addr.ip() != from.addr.ip() {
            return Err(SipError::with_reason(403, "Not from the subscriber"));
        }
        Ok(id)
    }

    /// A NOTIFY of subscription `id` got `status` (408 for no answer at
    /// all): a 481 or 408 means the watcher is gone, and the subscription
    /// ends (RFC 6665 §4.2.2).
    pub fn notify_failed(&mut self, id: &SubscriptionId, status: u16) {
        if matches!(status, 408 | 481) && self.subs.remove(id).is_some() {
            tracing::info!(call_id = %id.call_id, status, "subscription ended: the watcher is gone");
        }
    }

    /// A refresh or removal inside an existing subscription (§4.1.2.2).
    pub fn refresh(
        &mut self,
        req: &SipMessage,
        from: Peer,
        state: UserState,
        now: Instant,
    ) -> Result<SipMessage, SipError> {
        let id = self.subscription_of(req, from)?;
        let expires = Self::granted_expires(req)?;
        let sub = self.subs.get_mut(&id).ok_or_else(|| SipError::new(481))?;
        sub.expires_at = now + Duration::from_secs(u64::from(expires));
        sub.last = None; // a refresh gets a NOTIFY even without change
        let mut resp = response_to(req, 200, None, "");
        resp.push_header(HeaderName::Expires, expires.to_string());
        self.notify(&id, state, now);
        if expires == 0 {
            self.subs.remove(&id);
        }
        Ok(resp)
    }

    /// Whether anyone watches `target` (so its state is worth computing).
    pub fn watches(&self, target: &str) -> bool {
        self.subs.values().any(|s| s.target == target)
    }

    /// The watched user's state may have changed: NOTIFY where it did.
    pub fn update(&mut self, target: &str, state: UserState, now: Instant) {
        let ids: Vec<SubscriptionId> = self
            .subs
            .iter()
            .filter(|(_, s)| s.target == target && s.last != Some(state))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.notify(&id, state, now);
        }
    }

    /// Ends subscriptions past their expiry with a final NOTIFY (§4.4.1).
    pub fn expire(&mut self, now: Instant) {
        let gone: Vec<SubscriptionId> = self
            .subs
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(state) = self.subs.get(&id).and_then(|s| s.last) {
                self.notify(&id, state, now);
            }
            self.subs.remove(&id);
        }
    }

    fn notify(&mut self, id: &SubscriptionId, state: UserState, now: Instant) {
        let Some(sub) = self.subs.get_mut(id) else { return };
        let left = sub.expires_at.saturating_duration_since(now).as_secs();
        let subscription_state = if left == 0 {
            "terminated;reason=timeout".to_string()
        } else {
            format!("active;expires={left}")
        };
        sub.version += 1;
        sub.last = Some(state);
        let entity = format!("sip:{}", sub.target);
        let (ctype, body) = match sub.package {
            Package::Presence => ("application/pidf+xml", pidf(&entity, state)),
            Package::Dialog => ("application/dialog-info+xml", dialog_info(&entity, sub.version, state)),
        };
        let mut req = sub
            .dialog
            .request(Method::Notify, Some((ctype, bytes::Bytes::from(body))));
        req.push_header(HeaderName::Event, sub.package.name());
        req.push_header(HeaderName::Other("Subscription-State".into()), subscription_state);
        self.out.push_back((id.clone(), req, sub.dialog.peer));
    }
}

/// PIDF document (RFC 3863): basic open when a device is registered.
pub fn pidf(entity: &str, state: UserState) -> String {
    let basic = if state.registered { "open" } else { "closed" };
    let note = match (state.registered, state.call, state.agent) {
        (false, _, _) => "Offline",
        (true, Some("confirmed"), _) => "On the phone",
        (true, Some(_), _) => "Ringing",
        (true, None, Some("acw")) => "After-call work",
        (true, None, Some(_)) => "Not ready",
        (true, None, None) => "Available",
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{entity}\">\r\n\
         <tuple id=\"switchboard\"><status><basic>{basic}</basic></status><note>{note}</note></tuple>\r\n</presence>\r\n"
    )
}

/// dialog-info document (RFC 4235), full state: one dialog while the user
/// is ringing or talking, none otherwise.
pub fn dialog_info(entity: &str, version: u32, state: UserState) -> String {
    let dialog = match state.call {
        Some(s) => format!("<dialog id=\"switchboard\"><state>{s}</state></dialog>\r\n"),
        None => String::new(),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{version}\" state=\"full\" entity=\"{entity}\">\r\n{dialog}</dialog-info>\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::TransportKind;

    fn subscribe(event: &str, expires: u32) -> SipMessage {
        let raw = format!(
            "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKs\r\nFrom: <sip:1001@pbx.test>;tag=w\r\n\
             To: <sip:1002@pbx.test>\r\nCall-ID: sub-1\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:1001@127.0.0.1:6000>\r\nEvent: {event}\r\nExpires: {expires}\r\n\r\n"
        );
        SipMessage::parse_datagram(bytes::Bytes::from(raw)).unwrap()
    }

    fn peer() -> Peer {
        Peer {
            transport: TransportKind::Udp,
            addr: "127.0.0.1:6000".parse().unwrap(),
        }
    }

    const OFF: UserState = UserState {
        registered: false,
        call: None,
        agent: None,
    };
    const ON: UserState = UserState {
        registered: true,
        call: None,
        agent: None,
    };
    const TALKING: UserState = UserState {
        registered: true,
        call: Some("confirmed"),
        agent: None,
    };

    fn notifies(p: &mut PresenceService) -> Vec<SipMessage> {
        std::iter::from_fn(|| p.poll_output().map(|(_, m, _)| m)).collect()
    }

    #[test]
    fn presence_follows_registration_and_expires() {
        let mut p = PresenceService::new(vec!["127.0.0.1:5060".parse().unwrap()].into());
        let now = Instant::now();
        let ok = p
            .subscribe(
                &subscribe("presence", 600),
                peer(),
                Package::Presence,
                "1002@pbx.test",
                OFF,
                now,
            )
            .unwrap();
        assert_eq!((ok.status(), ok.header(&HeaderName::Expires)), (Some(200), Some("600")));
        let n = notifies(&mut p);
        assert_eq!(n.len(), 1, "initial NOTIFY");
        assert_eq!(n[0].request_uri(), Some("sip:1001@127.0.0.1:6000"));
        assert!(std::str::from_utf8(&n[0].body)
            .unwrap()
            .contains("<basic>closed</basic>"));
        assert_eq!(n[0].header_named("Subscription-State"), Some("active;expires=600"));
        p.update("1002@pbx.test", OFF, now);
        assert!(notifies(&mut p).is_empty(), "no change, no NOTIFY");
        p.update("1002@pbx.test", ON, now);
        let n = notifies(&mut p);
        assert!(std::str::from_utf8(&n[0].body).unwrap().contains("<basic>open</basic>"));
        assert_eq!(n[0].header(&HeaderName::CSeq), Some("2 NOTIFY"));
        p.expire(now + Duration::from_secs(601));
        let n = notifies(&mut p);
        assert_eq!(
            n[0].header_named("Subscription-State"),
            Some("terminated;reason=timeout")
        );
        assert!(p.is_empty());
    }

    #[test]
    fn dialog_package_and_bounds() {
        let mut p = PresenceService::new(vec!["127.0.0.1:5060".parse().unwrap()].into());
        let now = Instant::now();
        assert_eq!(
            PresenceService::granted_expires(&subscribe("dialog", 5))
                .unwrap_err()
                .status,
            423
        );
        assert_eq!(
            PresenceService::granted_expires(&subscribe("dialog", 99999)).unwrap(),
            MAX_EXPIRES
        );
        p.subscribe(
            &subscribe("dialog", 600),
            peer(),
            Package::Dialog,
            "1002@pbx.test",
            ON,
            now,
        )
        .unwrap();
        p.update("1002@pbx.test", TALKING, now);
        let n = notifies(&mut p);
        let last = std::str::from_utf8(&n[1].body).unwrap();
        assert!(
            last.contains("version=\"2\"") && last.contains("<state>confirmed</state>"),
            "{last}"
        );
        assert_eq!(n[1].header(&HeaderName::Event), Some("dialog"));
        assert_eq!(Package::parse("Presence;id=1"), Some(Package::Presence));
        assert_eq!(Package::parse("message-summary"), None);
    }

    /// The watcher's in-dialog SUBSCRIBE: `to_tag` is the tag we gave it.
    fn resubscribe(to_tag: &str, from_tag: &str, expires: u32) -> SipMessage {
        let raw = format!(
            "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKr\r\nFrom: <sip:1001@pbx.test>;tag={from_tag}\r\n\
             To: <sip:1002@pbx.test>;tag={to_tag}\r\nCall-ID: sub-1\r\nCSeq: 2 SUBSCRIBE\r\nEvent: presence\r\nExpires: {expires}\r\n\r\n"
        );
        SipMessage::parse_datagram(bytes::Bytes::from(raw)).unwrap()
    }

    fn subscribed(p: &mut PresenceService, now: Instant) -> String {
        let ok = p
            .subscribe(
                &subscribe("presence", 600),
                peer(),
                Package::Presence,
                "1002@pbx.test",
                OFF,
                now,
            )
            .unwrap();
        notifies(p);
        crate::sip::dialog::tag_of(ok.header(&HeaderName::To).unwrap()).unwrap()
    }

    #[test]
    fn a_subscription_is_refreshed_or_ended_only_by_its_own_dialog_and_watcher() {
        let mut p = PresenceService::new(vec!["127.0.0.1:5060".parse().unwrap()].into());
        let now = Instant::now();
        let tag = subscribed(&mut p, now);
        let elsewhere = Peer {
            transport: TransportKind::Udp,
            addr: "192.0.2.66:6000".parse().unwrap(),
        };
        // The right Call-ID with a guessed tag, or the right dialog from
        // another address: refused, the subscription kept.
        let err = p.refresh(&resubscribe("guess", "w", 0), peer(), OFF, now).unwrap_err();
        assert_eq!(err.status, 481);
        let err = p.refresh(&resubscribe(&tag, "other", 0), peer(), OFF, now).unwrap_err();
        assert_eq!(err.status, 481);
        let err = p.refresh(&resubscribe(&tag, "w", 0), elsewhere, OFF, now).unwrap_err();
        assert_eq!(err.status, 403);
        assert_eq!(p.len(), 1);
        assert!(notifies(&mut p).is_empty());
        // The watcher itself ends it.
        let ok = p.refresh(&resubscribe(&tag, "w", 0), peer(), OFF, now).unwrap();
        assert_eq!(ok.status(), Some(200));
        assert!(p.is_empty());
    }

    #[test]
    fn a_notify_answered_481_or_408_ends_the_subscription() {
        let mut p = PresenceService::new(vec!["127.0.0.1:5060".parse().unwrap()].into());
        let now = Instant::now();
        for status in [481, 408] {
            subscribed(&mut p, now);
            p.update("1002@pbx.test", ON, now);
            let (id, _, _) = p.poll_output().expect("a NOTIFY for the change");
            p.notify_failed(&id, 500);
            assert_eq!(p.len(), 1, "a server error is not the watcher gone");
            p.notify_failed(&id, status);
            assert!(p.is_empty(), "{status} ends it");
            p.update("1002@pbx.test", OFF, now);
            assert!(p.poll_output().is_none(), "no NOTIFY to a dead watcher");
        }
    }
}
