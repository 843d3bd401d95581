//! INVITE server transaction (RFC 3261 §17.2.1, figure 7, with the
//! Accepted state of RFC 6026 §7.1).

use super::{Action, TimerConfig, TimerKind};
use bytes::Bytes;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Proceeding,
    /// A 2xx was sent; retransmitted INVITEs are absorbed (RFC 6026).
    Accepted,
    /// A 3xx–6xx was sent; retransmitted until ACK (Timer G) or Timer H.
    Completed,
    Confirmed,
}

pub struct ServerInvite {
    timers: TimerConfig,
    reliable: bool,
    pub state: State,
    last_response: Bytes,
    g_interval: Duration,
}

impl ServerInvite {
    /// Creates the transaction; it sends 100 Trying at once (§17.2.1 lets
    /// the TU delay it, but a B2BUA answers only after a dialplan runs).
    pub fn new(timers: TimerConfig, reliable: bool, trying: Bytes) -> (ServerInvite, Vec<Action>) {
        let m = ServerInvite {
            timers,
            reliable,
            state: State::Proceeding,
            last_response: trying.clone(),
            g_interval: timers.t1,
        };
        (m, vec![Action::Send(trying)])
    }

    pub fn on_retransmit(&mut self) -> Vec<Action> {
        match self.state {
            State::Proceeding | State::Completed => vec![Action::Send(self.last_response.clone())],
            State::Accepted | State::Confirmed => Vec::new(),
        }
    }

    pub fn on_ack(&mut self) -> Vec<Action> {
        if self.state != State::Completed {
            return Vec::new();
        }
        self.state = State::Confirmed;
        // Timer I: T4 for unreliable transports, zero for reliable ones.
        let i = if self.reliable { Duration::ZERO } else { self.timers.t4 };
        vec![Action::Timer(TimerKind::I, i)]
    }

    pub fn send_response(&mut self, status: u16, data: Bytes) -> Vec<Action> {
        match self.state {
            State::Proceeding => {}
            // The TU retransmits its own 2xx in Accepted (§13.3.1.4).
            State::Accepted if (200..300).contains(&status) => return vec![Action::Send(data)],
            _ => return Vec::new(),
        }
        self.last_response = data.clone();
        let mut out = vec![Action::Send(data)];
        if status < 200 {
            return out;
        }
        if status < 300 {
            self.state = State::Accepted;
            out.push(Action::Timer(TimerKind::L, self.timers.t1 * 64));
        } else {
            self.state = State::Completed;
            if !self.reliable {
                out.push(Action::Timer(TimerKind::G, self.g_interval));
            }
            out.push(Action::Timer(TimerKind::H, self.timers.t1 * 64));
        }
        out
    }

    pub fn on_timer(&mut self, kind: TimerKind) -> Vec<Action> {
        match (kind, self.state) {
            (TimerKind::G, State::Completed) => {
                self.g_interval = (self.g_interval * 2).min(self.timers.t2);
                vec![
                    Action::Send(self.last_response.clone()),
                    Action::Timer(TimerKind::G, self.g_interval),
                ]
            }
            (TimerKind::H, State::Completed) => vec![Action::Timeout, Action::Terminate],
            (TimerKind::I, State::Confirmed) | (TimerKind::L, State::Accepted) => {
                vec![Action::Terminate]
            }
            _ => Vec::new(),
        }
    }
}
