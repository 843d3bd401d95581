//! Call history as users read it (the API's `/history`): records
//! filtered by whose they are and what kind they were for that user
//! (missed, incoming, outgoing, transferred), by date, number and queue,
//! newest first in pages; and the tags and notes agents add to a record
//! after the call, kept beside it (the record itself is written by the
//! call engine, and again when after-call work ends).

use super::CallRecord;
use crate::store::{Key, Scan, StoreBackend, StoreError, StoreOp, Table};
use serde::{Deserialize, Serialize};

/// Most records one page request reads before it stops looking.
const MAX_SCANNED: usize = 100_000;

/// What a call was for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Came to the user (or to a group or queue that offered it to them)
    /// and nobody answered the caller.
    Missed,
    /// Came to the user, or to a group or queue that offered it to them.
    Incoming,
    /// The user placed it.
    Outgoing,
    /// Transferred: it began as a transfer, or was transferred on.
    Transferred,
}

/// Which records a page holds; all conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Whose calls (an extension), and what kind of call for them.
    pub user: Option<String>,
    pub kind: Option<Kind>,
    /// Started at or after / before, Unix ms.
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// Any party (caller, callee, a leg's party) is this number.
    pub number: Option<String>,
    pub queue: Option<String>,
}

impl CallRecord {
    /// Everyone the call involved: caller, callee, each leg's party and
    /// the agents who answered it in a queue.
    pub fn parties(&self) -> impl Iterator<Item = &str> {
        [self.caller.as_str(), self.callee.as_str()]
            .into_iter()
            .chain(self.legs.iter().map(|l| l.party.as_str()))
            .chain(self.queues.iter().filter_map(|q| q.agent.as_deref()))
    }

    /// Somebody other than the caller answered (a user, not the PBX
    /// answering a queue caller).
    pub fn answered_by_someone(&self) -> bool {
        self.legs
            .iter()
            .any(|l| l.party != self.caller && l.answer_ms.is_some())
    }

    /// Whether the call was of `kind` for `user`.
    pub fn is_kind_for(&self, kind: Kind, user: &str) -> bool {
        let incoming = self.caller != user && self.parties().any(|p| p == user);
        match kind {
            Kind::Outgoing => self.caller == user,
            Kind::Incoming => incoming,
            Kind::Missed => incoming && !self.answered_by_someone(),
            Kind::Transferred => {
                self.parties().any(|p| p == user) && (self.transfer.is_some() || self.transferred_to.is_some())
            }
        }
    }
}

impl Filter {
    pub fn keeps(&self, r: &CallRecord) -> bool {
        let user_ok = match (&self.user, self.kind) {
            (Some(u), Some(k)) => r.is_kind_for(k, u),
            (Some(u), None) => r.involves(u),
            (None, _) => true,
        };
        user_ok
            && self.from_ms.is_none_or(|t| r.start_ms >= t)
            && self.to_ms.is_none_or(|t| r.start_ms < t)
            && self.number.as_deref().is_none_or(|n| r.involves(n))
            && self
                .queue
                .as_deref()
                .is_none_or(|q| r.queues.iter().any(|x| x.queue == q))
    }
}

/// What a user added to a record after the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Annotation {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub updated_by: String,
    #[serde(default)]
    pub updated_ms: u64,
}

/// A record as history shows it: its id (the store key, the cursor of
/// paging) and what users added to it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub id: String,
    #[serde(flatten)]
    pub record: CallRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation: Option<Annotation>,
}

/// Newest first, from the record before `before` (an entry id) on: up to
/// `limit` entries that `filter` and `visible` keep, and the id to pass as
/// `before` for the next page (None when there is none).
pub fn page(
    backend: &dyn StoreBackend,
    filter: &Filter,
    visible: &dyn Fn(&CallRecord) -> bool,
    before: Option<&str>,
    limit: usize,
) -> Result<(Vec<Entry>, Option<String>), StoreError> {
    let scan = before.map_or(Scan::Backward, |b| Scan::Below(Key::text(b)));
    let (mut out, mut scanned, mut more) = (Vec::new(), 0, false);
    backend.scan(Table::Cdr, scan, &mut |k, v| {
        scanned += 1;
        if let (Key::Text(id), Some(r)) = (k, v.json::<CallRecord>()) {
            if filter.keeps(&r) && visible(&r) {
                if out.len() == limit {
                    more = true;
                    return false;
                }
                out.push(Entry {
                    id: id.clone(),
                    record: r,
                    annotation: None,
                });
            }
        }
        scanned < MAX_SCANNED
    })?;
    for e in &mut out {
        e.annotation = backend
            .get(Table::CdrNote, &Key::text(e.id.as_str()))?
            .and_then(|v| v.json());
    }
    // Stopped by the scan cap: the next page starts after the last read.
    let next = if more || scanned >= MAX_SCANNED {
        out.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok((out, next))
}

/// The record with id `id`.
pub fn get(backend: &dyn StoreBackend, id: &str) -> Result<Option<CallRecord>, StoreError> {
    Ok(backend.get(Table::Cdr, &Key::text(id))?.and_then(|v| v.json()))
}

/// The row that keeps `note` beside record `id`.
pub fn annotation_op(id: &str, note: &Annotation) -> StoreOp {
    StoreOp::put_json(Table::CdrNote, Key::text(id), note).expect("annotations serialize")
}

/// Why tags and notes were not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotateError {
    #[error("no such call record")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("the change could not be stored")]
    Store,
}

/// Record `id` with `tags` and/or `notes` (absent ones stay) set by `by`,
/// if `visible` lets the user see it: the entry as it now reads, and the
/// row to write.
pub fn annotate(
    backend: &dyn StoreBackend,
    id: &str,
    visible: &dyn Fn(&CallRecord) -> bool,
    tags: Option<Vec<String>>,
    notes: Option<String>,
    by: &str,
    now_ms: u64,
) -> Result<(Entry, StoreOp), AnnotateError> {
    let record = get(backend, id)
        .map_err(|_| AnnotateError::Store)?
        .filter(|r| visible(r))
        .ok_or(AnnotateError::NotFound)?;
    let mut note: Annotation = backend
        .get(Table::CdrNote, &Key::text(id))
        .map_err(|_| AnnotateError::Store)?
        .and_then(|v| v.json())
        .unwrap_or_default();
    if let Some(t) = tags {
        note.tags = t.into_iter().map(|t| t.trim().to_string()).collect();
    }
    if let Some(n) = notes {
        note.notes = n;
    }
    check_annotation(&note.tags, &note.notes).map_err(AnnotateError::Invalid)?;
    note.updated_by = by.to_string();
    note.updated_ms = now_ms;
    let op = annotation_op(id, &note);
    Ok((
        Entry {
            id: id.to_string(),
            record,
            annotation: Some(note),
        },
        op,
    ))
}

/// Tags and notes as a user may write them: at most 20 tags of 50
/// characters, notes of 4000; no control characters but newlines in notes.
pub fn check_annotation(tags: &[String], notes: &str) -> Result<(), String> {
    if tags.len() > 20 {
        return Err("tags: more than 20".into());
    }
    if let Some(t) = tags
        .iter()
        .find(|t| t.trim().is_empty() || t.chars().count() > 50 || t.chars().any(char::is_control))
    {
        return Err(format!(
            "tags: {t:?} (empty, over 50 characters or with control characters)"
        ));
    }
    if notes.chars().count() > 4000 || notes.chars().any(|c| c.is_control() && c != '\n') {
        return Err("notes: over 4000 characters or with control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{LegRecord, QueueRecord, TransferRecord};

    fn leg(party: &str, answered: bool) -> LegRecord {
        LegRecord {
            leg: 1,
            call_id: "c".into(),
            party: party.into(),
            direction: "outbound".into(),
            start_ms: 0,
            answer_ms: answered.then_some(1),
            end_ms: 2,
            sip_code: if answered { 200 } else { 487 },
            rtp_packets: 0,
            rtp_seq_gaps: 0,
        }
    }

    fn record(caller: &str, callee: &str, legs: Vec<LegRecord>, start_ms: u64) -> CallRecord {
        CallRecord {
            call_id: format!("{caller}-{callee}-{start_ms}"),
            conversation: 0,
            account: "a.test".into(),
            caller: caller.into(),
            callee: callee.into(),
            direction: "internal".into(),
            start_ms,
            answer_ms: None,
            end_ms: start_ms + 1,
            duration_s: 0,
            disposition: String::new(),
            hangup_side: String::new(),
            sip_code: 0,
            rtp_from_caller: 0,
            rtp_from_callee: 0,
            rtp_seq_gaps: 0,
            legs,
            queues: Vec::new(),
            transfer: None,
            transferred_to: None,
            monitor: None,
        }
    }

    #[test]
    fn kinds_are_what_the_call_was_for_that_user() {
        let answered = record("1001", "1004", vec![leg("1001", true), leg("1004", true)], 1);
        let unanswered = record("1001", "1004", vec![leg("1001", false), leg("1004", false)], 2);
        // A queue call the PBX answered (the caller's leg) and agent 1005
        // took after 1004's phone rang.
        let mut queued = record(
            "600123456",
            "3001",
            vec![leg("600123456", true), leg("1004", false), leg("1005", true)],
            3,
        );
        queued.queues.push(QueueRecord {
            queue: "3001".into(),
            wait_s: 4,
            agent: Some("1005".into()),
            outcome: "answered".into(),
            acw_s: None,
        });
        let mut abandoned = record("600123456", "3001", vec![leg("600123456", true), leg("1004", false)], 4);
        abandoned.transfer = Some(TransferRecord {
            by: "1002".into(),
            kind: "blind".into(),
            from_conversation: 1,
            outcome: "abandoned".into(),
        });
        let kinds = |r: &CallRecord, u: &str| {
            [Kind::Missed, Kind::Incoming, Kind::Outgoing, Kind::Transferred]
                .into_iter()
                .filter(|k| r.is_kind_for(*k, u))
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&answered, "1004"), [Kind::Incoming]);
        assert_eq!(kinds(&answered, "1001"), [Kind::Outgoing]);
        assert_eq!(kinds(&unanswered, "1004"), [Kind::Missed, Kind::Incoming]);
        assert_eq!(kinds(&queued, "1005"), [Kind::Incoming]);
        assert_eq!(kinds(&queued, "1004"), [Kind::Incoming], "another agent answered it");
        assert_eq!(
            kinds(&abandoned, "1004"),
            [Kind::Missed, Kind::Incoming, Kind::Transferred]
        );
        assert!(kinds(&answered, "1002").is_empty());
        let f = Filter {
            queue: Some("3001".into()),
            from_ms: Some(3),
            to_ms: Some(4),
            ..Default::default()
        };
        assert!(f.keeps(&queued) && !f.keeps(&abandoned) && !f.keeps(&answered));
    }

    #[test]
    fn tags_and_notes_are_checked() {
        assert!(check_annotation(&["sale".into()], "called back\nok").is_ok());
        assert!(check_annotation(&[" ".into()], "").is_err());
        assert!(check_annotation(&[], &"n".repeat(4001)).is_err());
        assert!(check_annotation(&[], "bell\u{7}").is_err());
    }
}
