//! Non-INVITE server transaction (RFC 3261 §17.2.2, figure 8).

use super::{Action, TimerConfig, TimerKind};
use bytes::Bytes;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
}

pub struct ServerNonInvite {
    timers: TimerConfig,
    reliable: bool,
    pub state: State,
    last_response: Option<Bytes>,
}

impl ServerNonInvite {
    pub fn new(timers: TimerConfig, reliable: bool) -> ServerNonInvite {
        ServerNonInvite {
            timers,
            reliable,
            state: State::Trying,
            last_response: None,
        }
    }

    /// A retransmission of the request: re-send the last response (§17.2.2).
    pub fn on_retransmit(&mut self) -> Vec<Action> {
        match (&self.state, &self.last_response) {
            (State::Proceeding | State::Completed, Some(r)) => vec![Action::Send(r.clone())],
            _ => Vec::new(),
        }
    }

    pub fn send_response(&mut self, status: u16, data: Bytes) -> Vec<Action> {
        if self.state == State::Completed {
            return Vec::new();
        }
        self.last_response = Some(data.clone());
        if status < 200 {
            self.state = State::Proceeding;
            return vec![Action::Send(data)];
        }
        self.state = State::Completed;
        // Timer J: 64*T1 for unreliable transports, zero for reliable ones.
        // (The layer keeps a completed UDP transaction in `completed`
        // instead, so here it is in practice the reliable case.)
        let j = if self.reliable {
            Duration::ZERO
        } else {
            self.timers.t1 * 64
        };
        vec![Action::Send(data), Action::Timer(TimerKind::J, j)]
    }

    pub fn on_timer(&mut self, kind: TimerKind) -> Vec<Action> {
        match (kind, self.state) {
            (TimerKind::J, State::Completed) => vec![Action::Terminate],
            _ => Vec::new(),
        }
    }
}
