//! Non-INVITE client transaction (RFC 3261 §17.1.2, figure 6).

use super::{Action, TimerConfig, TimerKind};
use crate::sip::SipMessage;
use bytes::Bytes;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
}

pub struct ClientNonInvite {
    timers: TimerConfig,
    reliable: bool,
    pub state: State,
    request: Bytes,
    e_interval: Duration,
}

impl ClientNonInvite {
    pub fn new(timers: TimerConfig, reliable: bool, request: Bytes) -> (ClientNonInvite, Vec<Action>) {
        let mut out = vec![Action::Send(request.clone())];
        if !reliable {
            out.push(Action::Timer(TimerKind::E, timers.t1));
        }
        out.push(Action::Timer(TimerKind::F, timers.t1 * 64));
        let m = ClientNonInvite {
            timers,
            reliable,
            state: State::Trying,
            request,
            e_interval: timers.t1,
        };
        (m, out)
    }

    pub fn on_response(&mut self, resp: SipMessage) -> Vec<Action> {
        let status = resp.status().unwrap_or(500);
        match self.state {
            State::Completed => Vec::new(),
            _ if status < 200 => {
                self.state = State::Proceeding;
                vec![Action::DeliverResponse(resp)]
            }
            _ => {
                self.state = State::Completed;
                // Timer K: T4 for unreliable transports, zero for reliable ones.
                let k = if self.reliable { Duration::ZERO } else { self.timers.t4 };
                vec![Action::DeliverResponse(resp), Action::Timer(TimerKind::K, k)]
            }
        }
    }

    pub fn on_timer(&mut self, kind: TimerKind) -> Vec<Action> {
        match (kind, self.state) {
            (TimerKind::E, State::Trying) => {
                self.e_interval = (self.e_interval * 2).min(self.timers.t2);
                vec![
                    Action::Send(self.request.clone()),
                    Action::Timer(TimerKind::E, self.e_interval),
                ]
            }
            (TimerKind::E, State::Proceeding) => vec![
                Action::Send(self.request.clone()),
                Action::Timer(TimerKind::E, self.timers.t2),
            ],
            (TimerKind::F, State::Trying | State::Proceeding) => {
                vec![Action::Timeout, Action::Terminate]
            }
            (TimerKind::K, State::Completed) => vec![Action::Terminate],
            _ => Vec::new(),
        }
    }
}
