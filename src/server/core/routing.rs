//! Where the core joins the call engine, the queues and the agent states:
//! routing to queues and ring groups (from `dial`, `queue`, `group`, an
//! overflow or a group's no-answer destination), the queues' offers and
//! their outcomes, and the agents' feature codes.

use super::Core;
use crate::acd::{AcdOutput, AgentState, OfferOutcome, Refusal};
use crate::call::CallRef;
use crate::clock::Now;
use crate::config::{Account, Destination, RingStrategy};
use crate::dialplan::Reply;
use std::time::Duration;

/// The confirmation a phone hears after a feature code.
const CONFIRMATION: &str = "sounds/confirm.wav";

impl Core {
    /// `dial(targets)` of the dialplan: one number that is a queue or a
    /// group goes there; anything else rings users, remote extensions or
    /// trunks.
    pub(super) fn route_dial(
        &mut self,
        call: CallRef,
        targets: Vec<String>,
        timeout_s: Option<u64>,
        external: bool,
        trunk: Option<String>,
        now: Now,
    ) {
        // The configuration of this moment (a cheap Arc: an account is
        // never cloned on the call path, it holds every user).
        let config = self.config.clone();
        let Some(account) = self.engines.calls.account_of(call).and_then(|d| config.account(&d)) else {
            return self.reply_now(call, Reply::CallEnded);
        };
        if let ([only], false) = (targets.as_slice(), external) {
            if account.queue(only).is_some() {
                return self.route_queue(call, account, only, None, now);
            }
            if account.group(only).is_some() {
                return self.route_group(call, account, only, now);
            }
        }
        // The trunk the script names, else the account's, in order.
        let trunk_named = trunk.is_some();
        let names = match trunk {
            Some(t) => vec![t],
            None => account.trunks.clone(),
        };
        let trunks = names
            .iter()
            .filter_map(|n| config.trunks.iter().find(|t| &t.name == n).cloned())
            .collect();
        let req = crate::call::DialRequest {
            targets,
            timeout: timeout_s.map(Duration::from_secs),
            external,
            trunks,
            trunk_named,
            account,
            registrar: &self.engines.registrar,
        };
        self.engines.calls.dial(call, req, now);
    }

    /// Answers the dialplan's pending action now (no engine involved).
    pub(super) fn reply_now(&mut self, call: CallRef, reply: Reply) {
        if let Some(waiting) = self.dialplan_replies.remove(&call) {
            let _ = waiting.send(reply);
        }
    }

    /// The caller enters queue `number` (or is refused: full, no agents),
    /// or goes to the queue's overflow when refused.
    pub(super) fn route_queue(
        &mut self,
        call: CallRef,
        account: &Account,
        number: &str,
        max_wait: Option<u64>,
        now: Now,
    ) {
        let Some(queue) = account.queue(number) else {
            return self.reply_now(call, Reply::Failed(format!("queue: {number} is not a queue")));
        };
        let entered = self.engines.queues.enqueue(
            &account.domain,
            number,
            call,
            max_wait.map(Duration::from_secs),
            &self.engines.agents,
            now,
        );
        match entered {
            Ok(position) => {
                tracing::info!(call, queue = number, position, "caller queued");
                let music = queue.moh.display().to_string();
                if !self.engines.calls.enter_queue(call, number, &queue.name, &music, now) {
                    self.engines.queues.left(call, now);
                }
            }
            Err(refusal) => {
                let (result, code) = match refusal {
                    Refusal::Full => ("full", 486),
                    Refusal::NoAgents => ("no_agents", 480),
                };
                tracing::info!(call, queue = number, result, "caller refused by the queue");
                match queue.overflow.clone() {
                    Some(dest) => {
                        self.engines.calls.queue_refused(call, number, None);
                        self.route_destination(call, &dest, now);
                    }
                    None => self.engines.calls.queue_refused(call, number, Some((result, code))),
                }
            }
        }
    }

    /// Rings group `number`'s ready members by its strategy; when nobody
    /// answers, its `no_answer` destination (if any) takes the call.
    pub(super) fn route_group(&mut self, call: CallRef, account: &Account, number: &str, now: Now) {
        let Some(group) = account.group(number) else {
            return self.reply_now(call, Reply::Failed(format!("group: {number} is not a group")));
        };
        // Only ready members ring: not those talking, ringing, in
        // after-call work or not ready.
        let mut members: Vec<&String> = group
            .members
            .iter()
            .filter(|m| self.engines.agents.state(&format!("{m}@{}", account.domain)) == AgentState::Ready)
            .collect();
        if group.ring.strategy == RingStrategy::Random {
            use rand::seq::SliceRandom;
            members.shuffle(&mut rand::thread_rng());
        }
        let contacts = |m: &String| crate::call::user_contacts(&self.engines.registrar, account, m);
        let steps: Vec<Vec<crate::call::Contact>> = match group.ring.strategy {
            RingStrategy::Simultaneous => vec![members.iter().flat_map(|m| contacts(m)).collect()],
            _ => members.iter().map(|m| contacts(m)).collect(),
        };
        if let Some(dest) = group.ring.no_answer.clone() {
            self.fallbacks.insert(call, dest);
        }
        let (step, total) = (group.ring.member_timeout, group.ring.ring_timeout);
        self.engines.calls.dial_steps(call, number, steps, step, total, now);
    }

    /// Sends the call to a destination: a number of the account, or a
    /// hang-up code.
    pub(super) fn route_destination(&mut self, call: CallRef, dest: &Destination, now: Now) {
        tracing::info!(call, destination = ?dest, "call sent on to its overflow");
        match dest {
            Destination::Code(code) => self.engines.calls.hangup(call, *code, now),
            Destination::Number(n) => self.route_dial(call, vec![n.clone()], None, false, None, now),
        }
    }

    /// A dialplan reply on its way: a group whose members did not answer
    /// sends the call to its no-answer destination instead (the reply
    /// comes from there). True if the reply was taken.
    pub(super) fn take_group_failure(&mut self, call: CallRef, reply: &Reply) -> bool {
        let Some(dest) = self.fallbacks.remove(&call) else {
            return false;
        };
        let unanswered = matches!(reply, Reply::Dialed(o) if o.result != "answered");
        if !unanswered {
            return false;
        }
        self.route_destination(call, &dest, Now::read());
        true
    }

    pub(super) fn on_acd_output(&mut self, output: AcdOutput) {
        let now = Now::read();
        match output {
            AcdOutput::Offer {
                call,
                domain,
                queue,
                agents,
                timeout,
            } => {
                let config = self.config.clone();
                let Some(account) = config.account(&domain) else {
                    return;
                };
                let mut contacts = Vec::new();
                for agent in agents {
                    let found = crate::call::user_contacts(&self.engines.registrar, account, &agent);
                    if found.is_empty() {
                        let aor = format!("{agent}@{domain}");
                        self.engines.queues.offer_ended(call, &aor, OfferOutcome::Failed, now);
                    }
                    contacts.extend(found);
                }
                tracing::debug!(call, queue = %queue, legs = contacts.len(), "queue offer");
                self.engines.calls.offer(call, contacts, timeout, now);
            }
            AcdOutput::WaitedTooLong {
                call,
                domain,
                queue,
                overflow,
            } => {
                tracing::info!(call, queue = %queue, account = %domain, "caller leaves the queue: waited too long, or the queue was removed");
                match overflow {
                    Some(dest) => {
                        self.engines.calls.leave_queue(call, "overflow", None, now);
                        self.route_destination(call, &dest, now);
                    }
                    None => self.engines.calls.leave_queue(call, "timeout", Some("timeout"), now),
                }
            }
            AcdOutput::TooManyMissed { aor } => {
                tracing::info!(aor = %aor, "agent missed too many queue calls in a row: not ready");
                self.set_agent_choice(&aor, Some("no answer".into()));
            }
        }
    }

    /// A queue offer ended (from the call engine).
    pub(super) fn on_offer_ended(&mut self, call: CallRef, account: &str, agent: &str, outcome: OfferOutcome) {
        let aor = format!("{agent}@{account}");
        let now = Now::read();
        let acw = self
            .engines
            .queues
            .offer_ended(call, &aor, outcome, now)
            .map(|q| q.acw_limit);
        if let (Some(limit), OfferOutcome::Answered { leg }) = (acw, outcome) {
            self.engines.agents.acw_after(&aor, leg, limit);
        }
    }

    /// Sets an agent's own choice (ready, or not ready with a reason) and
    /// keeps it in the store.
    pub(super) fn set_agent_choice(&mut self, aor: &str, not_ready: Option<String>) {
        let _ = self.store.write(&[crate::acd::agents::stored_choice(aor, &not_ready)]);
        self.engines.agents.set_not_ready(aor, not_ready);
    }

    /// A feature code dialled by `caller`: changes their agent state; the
    /// phone hears a confirmation and the call ends. False if `to` is none.
    pub(super) fn feature_code(&mut self, call: CallRef, account: &Account, caller: &str, to: &str) -> bool {
        let codes = &account.feature_codes;
        if account.user(caller).is_none() {
            return false;
        }
        let aor = format!("{caller}@{}", account.domain);
        let monitor = [
            (&codes.listen, crate::call::MonitorMode::Listen),
            (&codes.whisper, crate::call::MonitorMode::Whisper),
            (&codes.barge, crate::call::MonitorMode::Barge),
        ]
        .into_iter()
        .find_map(|(code, mode)| Some((to.strip_prefix(code.as_str())?, mode)))
        .filter(|(ext, _)| !ext.is_empty());
        if let Some((agent, mode)) = monitor {
            self.start_monitoring(call, account, caller, agent, mode);
            return true;
        }
        if to == codes.ready {
            self.set_agent_choice(&aor, None);
        } else if let Some(rest) = to.strip_prefix(codes.not_ready.as_str()) {
            let reason = if rest.is_empty() { "break" } else { rest };
            self.set_agent_choice(&aor, Some(reason.to_string()));
        } else if to == codes.end_acw {
            self.engines.agents.end_acw(&aor);
        } else {
            return false;
        }
        tracing::info!(aor = %aor, code = to, "agent feature code");
        self.engines.calls.announce_and_end(call, CONFIRMATION, Now::read());
        true
    }

    /// A supervisor's `*81<ext>` (listen), `*82` (whisper), `*83` (barge):
    /// owners and admins may monitor anyone of the account, supervisors
    /// the members of the groups that report to them, agents nobody.
    fn start_monitoring(
        &mut self,
        call: CallRef,
        account: &Account,
        who: &str,
        agent: &str,
        mode: crate::call::MonitorMode,
    ) {
        use crate::config::Role;
        let now = Now::read();
        let allowed = match account.user(who).map(|u| u.role) {
            Some(Role::Owner | Role::Admin) => true,
            Some(Role::Supervisor) => account
                .groups
                .iter()
                .any(|g| g.supervisors.iter().any(|s| s == who) && g.members.iter().any(|m| m == agent)),
            _ => false,
        };
        if !allowed {
            tracing::info!(
                supervisor = who,
                agent,
                "monitoring refused: not a supervisor of the agent"
            );
            return self.engines.calls.hangup(call, 403, now);
        }
        let Some(leg) = self.engines.calls.talking_leg(&account.domain, agent) else {
            return self.engines.calls.hangup(call, 480, now);
        };
        match self.engines.calls.monitor(call, leg, mode, now) {
            Ok(()) => tracing::info!(supervisor = who, agent, mode = mode.name(), "monitoring"),
            Err(e) => {
                tracing::warn!(supervisor = who, agent, error = %e, "monitoring failed");
                self.engines.calls.hangup(call, 480, now);
            }
        }
    }

    /// An agent's `*2<number>#`: the target's devices ring (a user's; a
    /// queue may not be consulted: queues take blind transfers only).
    pub(super) fn on_consult(&mut self, call: CallRef, domain: &str, number: &str) {
        let now = Now::read();
        let contacts = match self.config.account(domain) {
            Some(a) if a.queue(number).is_some() => {
                tracing::info!(call, number, "consult refused: queues accept blind transfers only");
                Vec::new()
            }
            Some(a) => crate::call::user_contacts(&self.engines.registrar, a, number),
            None => Vec::new(),
        };
        let timeout = self.config.calls.ring_timeout;
        self.engines.calls.consult(call, contacts, timeout, now);
    }

    /// `agent_state(ext [, state, reason])` of the dialplan.
    pub(super) fn dialplan_agent_state(&mut self, call: CallRef, ext: &str, set: Option<(String, Option<String>)>) {
        let config = self.config.clone();
        let Some(account) = self.engines.calls.account_of(call).and_then(|d| config.account(&d)) else {
            return self.reply_now(call, Reply::CallEnded);
        };
        if account.user(ext).is_none() {
            return self.reply_now(call, Reply::Failed(format!("agent_state: no user {ext}")));
        }
        let aor = format!("{ext}@{}", account.domain);
        match set.as_ref().map(|(s, r)| (s.as_str(), r)) {
            Some(("ready", _)) => self.set_agent_choice(&aor, None),
            Some(("not_ready", reason)) => {
                self.set_agent_choice(&aor, Some(reason.clone().unwrap_or_else(|| "break".into())))
            }
            Some(_) => {
                self.engines.agents.end_acw(&aor);
            }
            None => {}
        }
        let state = self.engines.agents.state(&aor).name().to_string();
        self.reply_now(call, Reply::Result(state));
    }

    /// A queue call's record was stored: if its agent is now in after-call
    /// work, the record waits for its end.
    pub(super) fn await_acw(&mut self, record: &crate::cdr::CallRecord, now: std::time::Instant) {
        for q in &record.queues {
            let Some(agent) = &q.agent else { continue };
            let aor = format!("{agent}@{}", record.account);
            if self.engines.agents.state(&aor) == AgentState::Acw {
                self.acw_records.insert(aor, (record.clone(), now));
            }
        }
    }

    /// `aor`'s after-call work ended: its length goes into the record of
    /// the call it followed, stored again under the same key.
    pub(super) fn acw_over(&mut self, aor: &str, now: std::time::Instant) {
        let Some((mut record, since)) = self.acw_records.remove(aor) else {
            return;
        };
        let agent = aor.split('@').next().unwrap_or("");
        let secs = now.saturating_duration_since(since).as_secs_f64().round() as u64;
        for q in record.queues.iter_mut().filter(|q| q.agent.as_deref() == Some(agent)) {
            q.acw_s = Some(secs);
        }
        let _ = self.store.write(&[crate::cdr::record_op(&record)]);
    }
}
