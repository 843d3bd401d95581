//! Call records: one per conversation, with a record of each of its legs
//! inside, written to the store when its last leg ends (durably, so
//! finished calls survive `kill -9`).

pub mod history;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallRecord {
    /// Call-ID of the leg that started the conversation.
    pub call_id: String,
    /// The conversation's id in the daemon that recorded it (ties legs of
    /// one interaction together; unique per daemon run).
    #[serde(default)]
    pub conversation: u64,
    pub account: String,
    pub caller: String,
    pub callee: String,
    /// "internal" or "outbound".
    pub direction: String,
    /// Unix times in milliseconds.
    pub start_ms: u64,
    pub answer_ms: Option<u64>,
    #[serde(default)]
    pub end_ms: u64,
    /// Talk time in seconds (answer to end), 0 if never answered.
    #[serde(default)]
    pub duration_s: u64,
    /// "answered", "no-answer", "busy", "cancelled", "failed", or
    /// "interrupted" (in progress when the daemon died).
    #[serde(default)]
    pub disposition: String,
    /// "caller", "callee" or "system" (timeouts, dialplan, errors).
    #[serde(default)]
    pub hangup_side: String,
    /// Final SIP status of the caller's INVITE (200 when answered).
    #[serde(default)]
    pub sip_code: u16,
    /// RTP packets the relay received from the caller and from the callee,
    /// and sequence gaps seen in both (a loss indicator).
    #[serde(default)]
    pub rtp_from_caller: u64,
    #[serde(default)]
    pub rtp_from_callee: u64,
    #[serde(default)]
    pub rtp_seq_gaps: u64,
    /// Every leg of the conversation, in the order they ended.
    #[serde(default)]
    pub legs: Vec<LegRecord>,
    /// The queues the caller went through: queue, wait, the agent who
    /// answered, outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueRecord>,
    /// This conversation began as a transfer of another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferRecord>,
    /// A transfer sent this conversation's call there (a number, or the
    /// party joined by an attended transfer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_to: Option<String>,
    /// A supervisor's call that monitored an agent (its caller is the
    /// supervisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorRecord>,
}

/// A supervisor's call that monitored an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MonitorRecord {
    pub agent: String,
    /// "listen", "whisper" or "barge".
    pub mode: String,
}

/// How a conversation began as a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferRecord {
    /// Who transferred the call (the REFER's sender).
    pub by: String,
    /// "blind" or "attended".
    pub kind: String,
    /// The conversation the call was transferred from.
    pub from_conversation: u64,
    /// "connected" (someone answered), "failed" (nobody did: the
    /// transferee heard the failure announcement) or "abandoned" (the
    /// transferee hung up first).
    pub outcome: String,
}

/// A conversation's stay in one queue, as its call record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueRecord {
    pub queue: String,
    /// Seconds from entering the queue to an agent's answer (or to leaving).
    pub wait_s: u64,
    /// The agent who answered.
    pub agent: Option<String>,
    /// "answered", "abandoned", "overflow", "timeout" or "refused".
    pub outcome: String,
    /// The answering agent's after-call work, seconds (added to the
    /// stored record when it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acw_s: Option<u64>,
}

/// One leg of a conversation: one dialog with one party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LegRecord {
    pub leg: u64,
    pub call_id: String,
    /// The extension (or number) the leg faced.
    pub party: String,
    /// "inbound" (the party called us) or "outbound" (we called it).
    pub direction: String,
    pub start_ms: u64,
    pub answer_ms: Option<u64>,
    #[serde(default)]
    pub end_ms: u64,
    /// 200 if answered, else the final status of its INVITE.
    #[serde(default)]
    pub sip_code: u16,
    /// RTP packets the relay received from the party, and their sequence gaps.
    #[serde(default)]
    pub rtp_packets: u64,
    #[serde(default)]
    pub rtp_seq_gaps: u64,
}

/// A conversation in progress as the store keeps it: the fields of its
/// record known so far (borrowed, written twice per call), read back as a
/// [`CallRecord`] after a crash.
#[derive(Debug, Serialize)]
pub struct LiveMark<'a> {
    pub call_id: &'a str,
    pub conversation: u64,
    pub account: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    pub direction: &'a str,
    pub start_ms: u64,
    pub answer_ms: Option<u64>,
    pub legs: Vec<LiveLeg<'a>>,
}

/// A leg of a [`LiveMark`].
#[derive(Debug, Serialize)]
pub struct LiveLeg<'a> {
    pub leg: u64,
    pub call_id: &'a str,
    pub party: &'a str,
    pub direction: &'a str,
    pub start_ms: u64,
    pub answer_ms: Option<u64>,
    /// Set for legs that already ended.
    pub end_ms: u64,
    pub sip_code: u16,
}

impl CallRecord {
    /// Store key: end time first, so records list in time order.
    pub fn key(&self) -> String {
        format!("{:015}-{}", self.end_ms, self.call_id)
    }

    /// Whether `user` (or a number) took part: see [`CallRecord::parties`].
    pub fn involves(&self, user: &str) -> bool {
        self.parties().any(|p| p == user)
    }
}

/// The disposition of a call that was never answered, from the status
/// its caller got.
pub fn unanswered_disposition(code: u16) -> &'static str {
    match code {
        486 | 600 => "busy",
        408 | 480 => "no-answer",
        487 => "cancelled",
        _ => "failed",
    }
}

/// The store row of a finished conversation's record.
pub fn record_op(record: &CallRecord) -> crate::store::StoreOp {
    use crate::store::{Key, StoreOp, Table};
    // Plain structs with string keys: serialization cannot fail.
    StoreOp::put_json(Table::Cdr, Key::Text(record.key()), record).expect("call records serialize")
}

/// The newest `limit` records involving `user` (all if None), oldest first.
pub fn read(
    backend: &dyn crate::store::StoreBackend,
    user: Option<&str>,
    limit: usize,
) -> Result<Vec<CallRecord>, crate::store::StoreError> {
    let mut out = Vec::new();
    backend.scan(crate::store::Table::Cdr, crate::store::Scan::Backward, &mut |_, v| {
        if let Some(r) = v.json::<CallRecord>() {
            if user.is_none_or(|u| r.involves(u)) {
                out.push(r);
            }
        }
        out.len() < limit
    })?;
    out.reverse();
    Ok(out)
}

/// The store row that marks conversation `mark.conversation` as in
/// progress, for a restart after a crash to turn into an "interrupted"
/// record.
pub fn live_op(mark: &LiveMark) -> crate::store::StoreOp {
    use crate::store::{Key, StoreOp, Table};
    StoreOp::put_json(Table::Live, Key::Id(mark.conversation), mark).expect("call records serialize")
}

/// The conversation is over (its record is written in the same commit).
pub fn live_done(conversation: u64) -> crate::store::StoreOp {
    use crate::store::{Key, StoreOp, Table};
    StoreOp::delete(Table::Live, Key::Id(conversation))
}

/// At start-up: conversations that were in progress when the daemon died
/// become records with disposition "interrupted", ended at `now_ms` (the
/// restart; the real end is not known), and their markers go.
pub fn recover_interrupted(
    backend: &dyn crate::store::StoreBackend,
    now_ms: u64,
) -> Result<Vec<crate::store::StoreOp>, crate::store::StoreError> {
    let mut ops = Vec::new();
    for (key, value) in crate::store::all_rows(backend, crate::store::Table::Live)? {
        if let Some(mut r) = value.json::<CallRecord>() {
            r.end_ms = now_ms.max(r.start_ms);
            r.duration_s = r.answer_ms.map_or(0, |a| r.end_ms.saturating_sub(a) / 1000);
            r.disposition = "interrupted".into();
            r.hangup_side = "system".into();
            if r.answer_ms.is_some() {
                r.sip_code = 200;
            }
            for leg in &mut r.legs {
                if leg.end_ms == 0 {
                    leg.end_ms = r.end_ms;
                }
            }
            ops.push(record_op(&r));
        }
        ops.push(crate::store::StoreOp::delete(crate::store::Table::Live, key));
    }
    Ok(ops)
}
