//! The write-ahead journal in front of redb.
//!
//! A commit appends its ops to `journal.log` with one `write(2)` and returns:
//! once the kernel has the bytes, a `kill -9` of the daemon loses nothing.
//! The journal is folded into redb (one durable transaction, then the file
//! is emptied) every [`FOLD_INTERVAL`] or [`FOLD_OPS`] ops, so a power cut
//! loses at most the last interval. This replaces a durable redb commit —
//! a B-tree copy-on-write and an fsync — per batch of writes, which was
//! a quarter of the CPU of a registration (bench/RESULTS.md).
//!
//! Readers see every acknowledged write: before a read, ops not yet in
//! redb are applied in a non-durable transaction (the journal still holds
//! them until the next durable fold).
//!
//! A frame is `len: u32 LE | crc32(payload): u32 LE | payload`, the payload
//! the JSON list of one commit's ops. At start-up the frames are replayed
//! into redb; a torn or corrupt tail (a write cut short) is dropped with a
//! warning. Replaying twice is harmless: every op sets or deletes a key.

use super::{ChatState, RedbStore, StoreBackend, StoreError, StoreOp};
use crate::cdr::CallRecord;
use crate::chat::ChatMessage;
use crate::registrar::Binding;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest time an acknowledged write waits to reach redb durably.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(1);
/// Ops after which the journal is folded regardless of time.
const FOLD_OPS: usize = 8192;
const HEADER: usize = 8;
/// Bigger frames are corruption, not data.
const MAX_FRAME: usize = 64 << 20;

pub struct JournaledStore {
    db: RedbStore,
    journal: Mutex<Journal>,
}

struct Journal {
    file: File,
    /// Ops in the journal, oldest first.
    ops: Vec<StoreOp>,
    /// How many of `ops` are already applied (non-durably) to redb.
    applied: usize,
    last_fold: Instant,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{}: {e}", path.display()))
}

impl JournaledStore {
    /// Opens redb in `dir`, replays what the journal holds into it and
    /// empties the journal.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<JournaledStore, StoreError> {
        let db = RedbStore::open(dir, cache_bytes)?;
        let path = dir.join("journal.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let (ops, good) = decode_frames(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                offset = good,
                dropped_bytes = bytes.len() - good,
                "journal ends in a torn or corrupt frame; keeping what precedes it"
            );
        }
        if !ops.is_empty() {
            db.apply(&ops, true)?;
            tracing::info!(ops = ops.len(), "journal replayed into the store");
        }
        file.set_len(0).map_err(io(&path))?;
        let journal = Journal {
            file,
            ops: Vec::new(),
            applied: 0,
            last_fold: Instant::now(),
        };
        Ok(JournaledStore {
            db,
            journal: Mutex::new(journal),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        // A panic while holding the lock leaves the journal as consistent
        // as the file is: keep going.
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies journal ops not yet in redb, so a read sees them.
    fn catch_up(&self) -> Result<(), StoreError> {
        let mut j = self.lock();
        if j.applied < j.ops.len() {
            self.db.apply(&j.ops[j.applied..], false)?;
            j.applied = j.ops.len();
        }
        Ok(())
    }

    fn fold(&self, j: &mut Journal) -> Result<(), StoreError> {
        if !j.ops.is_empty() {
            // A durable commit also makes the earlier non-durable ones durable.
            self.db.apply(&j.ops[j.applied..], true)?;
            j.file
                .set_len(0)
                .map_err(|e| StoreError::Backend(format!("journal: {e}")))?;
            j.ops.clear();
            j.ops.shrink_to(FOLD_OPS);
            j.applied = 0;
        }
        j.last_fold = Instant::now();
        Ok(())
    }
}

fn encode_frame(ops: &[StoreOp]) -> Result<Vec<u8>, StoreError> {
    let mut frame = vec![0; HEADER];
    serde_json::to_writer(&mut frame, ops).map_err(|e| StoreError::Backend(e.to_string()))?;
    let len = (frame.len() - HEADER) as u32;
    let crc = crc32fast::hash(&frame[HEADER..]);
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// The ops of every whole, intact frame, and the length of those frames.
fn decode_frames(bytes: &[u8]) -> (Vec<StoreOp>, usize) {
    let mut ops = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + HEADER].try_into().unwrap());
        let start = at + HEADER;
        if len > MAX_FRAME || bytes.len() - start < len {
            break;
        }
        let payload = &bytes[start..start + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(frame_ops) = serde_json::from_slice::<Vec<StoreOp>>(payload) else {
            break;
        };
        ops.extend(frame_ops);
        at = start + len;
    }
    (ops, at)
}

impl StoreBackend for JournaledStore {
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let frame = encode_frame(ops)?;
        let mut j = self.lock();
        j.file
            .write_all(&frame)
            .map_err(|e| StoreError::Backend(format!("journal: {e}")))?;
        j.ops.extend_from_slice(ops);
        if j.ops.len() >= FOLD_OPS || j.last_fold.elapsed() >= FOLD_INTERVAL {
            self.fold(&mut j)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let mut j = self.lock();
        self.fold(&mut j)
    }

    fn load_bindings(&self) -> Result<Vec<(String, Vec<Binding>)>, StoreError> {
        self.catch_up()?;
        self.db.load_bindings()
    }

    fn call_records(&self, user: Option<&str>, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        self.catch_up()?;
        self.db.call_records(user, limit)
    }

    fn chat_state(&self) -> Result<ChatState, StoreError> {
        self.catch_up()?;
        self.db.chat_state()
    }

    fn chat_history(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        self.catch_up()?;
        self.db.chat_history(conversation, before, limit)
    }

    fn chat_messages(&self, account: &str) -> Result<Vec<ChatMessage>, StoreError> {
        self.catch_up()?;
        self.db.chat_messages(account)
    }

    fn read_marks(&self, aor: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.catch_up()?;
        self.db.read_marks(aor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(aor: &str, contact: &str) -> StoreOp {
        StoreOp::PutBindings {
            aor: aor.into(),
            bindings: vec![Binding {
                contact: contact.into(),
                expires_at: 2_000_000_000,
                call_id: "c".into(),
                cseq: 1,
                q: None,
                source: "127.0.0.1:5070".into(),
                transport: "UDP".into(),
                user_agent: None,
                registered_at: 1_900_000_000,
            }],
        }
    }

    fn aors(s: &JournaledStore) -> Vec<String> {
        s.load_bindings().unwrap().into_iter().map(|(a, _)| a).collect()
    }

    #[test]
    fn unfolded_writes_are_read_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
            s.commit(&[put("1001@a", "sip:1@h"), put("1002@a", "sip:2@h")]).unwrap();
            assert_eq!(aors(&s), ["1001@a", "1002@a"]);
            s.commit(&[StoreOp::DeleteBindings { aor: "1002@a".into() }]).unwrap();
            // Dropped without a fold, as by kill -9: only the journal has the delete.
            assert!(std::fs::metadata(dir.path().join("journal.log")).unwrap().len() > 0);
        }
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(aors(&s), ["1001@a"]);
        assert_eq!(std::fs::metadata(dir.path().join("journal.log")).unwrap().len(), 0);
    }

    #[test]
    fn sync_folds_into_redb_and_empties_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        s.commit(&[put("1001@a", "sip:1@h")]).unwrap();
        s.sync().unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("journal.log")).unwrap().len(), 0);
        drop(s);
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(aors(&s), ["1001@a"]);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_what_precedes_it_kept() {
        let a = encode_frame(&[put("1001@a", "sip:1@h")]).unwrap();
        let b = encode_frame(&[put("1002@a", "sip:2@h")]).unwrap();
        let mut bytes = [a.clone(), b.clone()].concat();
        let (ops, good) = decode_frames(&bytes);
        assert_eq!((ops.len(), good), (2, bytes.len()));
        bytes.truncate(a.len() + b.len() - 3);
        assert_eq!(decode_frames(&bytes), (vec![put("1001@a", "sip:1@h")], a.len()));
        let mut flipped = [a.clone(), b].concat();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        assert_eq!(decode_frames(&flipped).1, a.len());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("journal.log"), &bytes).unwrap();
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(aors(&s), ["1001@a"]);
    }
}
