//! INVITE client transaction (RFC 3261 §17.1.1, figure 5, with the
//! Accepted state of RFC 6026 §7.2), including the ACK for non-2xx
//! final responses (§17.1.1.3).

use super::{Action, TimerConfig, TimerKind};
use crate::sip::addr::CSeq;
use crate::sip::message::{Header, StartLine};
use crate::sip::{HeaderName, Method, SipMessage};
use bytes::Bytes;
use bytestring::ByteString;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calling,
    Proceeding,
    Accepted,
    Completed,
}

pub struct ClientInvite {
    timers: TimerConfig,
    reliable: bool,
    pub state: State,
    request: SipMessage,
    request_bytes: Bytes,
    a_interval: Duration,
    ack: Option<Bytes>,
}

impl ClientInvite {
    pub fn new(timers: TimerConfig, reliable: bool, request: SipMessage) -> (ClientInvite, Vec<Action>) {
        let request_bytes = request.to_bytes();
        let mut out = vec![Action::Send(request_bytes.clone())];
        if !reliable {
            out.push(Action::Timer(TimerKind::A, timers.t1));
        }
        out.push(Action::Timer(TimerKind::B, timers.t1 * 64));
        let m = ClientInvite {
            timers,
            reliable,
            state: State::Calling,
            request,
            request_bytes,
            a_interval: timers.t1,
            ack: None,
        };
        (m, out)
    }

    pub fn on_response(&mut self, resp: SipMessage) -> Vec<Action> {
        let status = resp.status().unwrap_or(500);
        match (self.state, status) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                vec![Action::DeliverResponse(resp)]
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                vec![
                    Action::DeliverResponse(resp),
                    Action::Timer(TimerKind::M, self.timers.t1 * 64),
                ]
            }
            // Retransmitted or forked 2xx: the TU ACKs each (RFC 6026 §7.2).
            (State::Accepted, 200..=299) => vec![Action::DeliverResponse(resp)],
            (State::Calling | State::Proceeding, _) => {
                self.state = State::Completed;
                let ack = self.build_ack(&resp);
                self.ack = Some(ack.clone());
                // Timer D: at least 32 s for unreliable transports, zero for reliable ones.
                let d = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32)
                };
                vec![
                    Action::Send(ack),
                    Action::DeliverResponse(resp),
                    Action::Timer(TimerKind::D, d),
                ]
            }
            (State::Completed, 300..=699) => self.ack.clone().map(Action::Send).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    pub fn on_timer(&mut self, kind: TimerKind) -> Vec<Action> {
        match (kind, self.state) {
            (TimerKind::A, State::Calling) => {
                self.a_interval *= 2;
                vec![
                    Action::Send(self.request_bytes.clone()),
                    Action::Timer(TimerKind::A, self.a_interval),
                ]
            }
            (TimerKind::B, State::Calling) => vec![Action::Timeout, Action::Terminate],
            (TimerKind::D, State::Completed) | (TimerKind::M, State::Accepted) => {
                vec![Action::Terminate]
            }
            _ => Vec::new(),
        }
    }

    /// §17.1.1.3: same Request-URI, Call-ID, From, top Via and Route as
    /// the INVITE, To from the response, CSeq number with method ACK.
    fn build_ack(&self, resp: &SipMessage) -> Bytes {
        let uri = match &self.request.start {
            StartLine::Request { uri, .. } => uri.clone(),
            StartLine::Response { .. } => ByteString::new(),
        };
        let mut headers = Vec::with_capacity(8);
        if let Some(v) = self.request.headers.iter().find(|h| h.name == HeaderName::Via) {
            let top = self.request.top_via().unwrap_or_default().to_string();
            headers.push(Header {
                name: v.name.clone(),
                value: ByteString::from(top),
            });
        }
        for h in &self.request.headers {
            match h.name {
                HeaderName::From | HeaderName::CallId | HeaderName::Route | HeaderName::MaxForwards => {
                    headers.push(h.clone())
                }
                HeaderName::CSeq => headers.push(Header {
                    name: HeaderName::CSeq,
                    value: ByteString::from(CSeq::same_number(&h.value, &Method::Ack)),
                }),
                _ => {}
            }
        }
        if let Some(to) = resp.headers.iter().find(|h| h.name == HeaderName::To) {
            headers.push(to.clone());
        }
        SipMessage {
            start: StartLine::Request {
                method: Method::Ack,
                uri,
            },
            headers,
            body: Bytes::new(),
        }
        .to_bytes()
    }
}
