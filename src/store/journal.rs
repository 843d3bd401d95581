//! The write-ahead journal in front of redb.
//!
//! A commit copies its ops into the open journal file, mapped into memory
//! (`MAP_SHARED`), and returns: the bytes are then in the kernel's page
//! cache, so a `kill -9` of the daemon loses nothing — as with `write(2)`,
//! which this replaces (a `write` per registration was 3 % of its CPU).
//! The file's space is allocated ahead ([`CHUNK`] at a time, doubling), so
//! a full disk is an error when growing, never a fault while copying.
//! The caller (the core task) commits inline, so answering a REGISTER
//! costs no thread hop. A fold thread moves the journal into
//! redb every [`FOLD_INTERVAL`] (sooner past [`FOLD_OPS`] ops): it starts
//! a new journal file, applies the old file's ops in one durable redb
//! transaction and deletes the file, so a power cut loses at most the last
//! interval. This replaces a durable redb commit — a B-tree copy-on-write
//! and an fsync — per batch of writes, which was a quarter to a third of
//! the CPU of a registration (bench/RESULTS.md).
//!
//! Readers see every acknowledged write: before a read, ops not yet folded
//! are applied in a non-durable transaction (their journal file still holds
//! them until the next durable fold).
//!
//! Files are `journal.<seq>.log`; a frame is `len: u32 LE |
//! crc32(payload): u32 LE | payload`, the payload one commit's row changes
//! with their values encoded as redb stores them (`rows.rs`), so a fold
//! copies bytes rather than parsing and re-serializing records. Frames
//! written before that hold the JSON list of the commit's ops, and are
//! still read. The frames end at the first zero header (the rest of the
//! file's allocated space). At start-up every file is replayed in order
//! into redb; a torn or corrupt frame (a copy cut short) and what follows
//! it are dropped with a warning.
//! Replaying twice is harmless: every op sets or deletes a key.

use super::rows::{self, Key, StoreOp, Table, Value};
use super::{RedbStore, Scan, StoreBackend, StoreError};
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Longest time an acknowledged write waits to reach redb durably.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(1);
/// Ops after which the fold thread is woken before its interval.
const FOLD_OPS: usize = 8192;
const HEADER: usize = 8;
/// Bigger frames are corruption, not data.
const MAX_FRAME: usize = 64 << 20;
/// Space a journal file starts with (a second of registrations at
/// 1,000/s is about 300 KB).
const CHUNK: usize = 1 << 20;

pub struct JournaledStore {
    dir: PathBuf,
    db: RedbStore,
    tail: Mutex<Tail>,
    /// Held while writing to redb, so folds and read catch-ups apply in
    /// the order the ops were committed.
    db_writes: Mutex<()>,
    fold_thread: std::thread::Thread,
}

/// The open journal file, mapped, how many bytes of frames and how many
/// ops it holds.
struct Tail {
    file: File,
    map: MmapMut,
    seq: u64,
    len: usize,
    ops: usize,
}

impl Tail {
    fn create(dir: &Path, seq: u64) -> Result<Tail, StoreError> {
        let file = create_journal(dir, seq)?;
        let map = map_journal(&file, CHUNK, &journal_path(dir, seq))?;
        Ok(Tail {
            file,
            map,
            seq,
            len: 0,
            ops: 0,
        })
    }
}

/// Allocates `len` bytes of disk space for `file` (its length becomes at
/// least `len`) and maps it.
fn map_journal(file: &File, len: usize, path: &Path) -> Result<MmapMut, StoreError> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain FFI call on an open descriptor.
    let err = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if err != 0 {
        return Err(io(path)(std::io::Error::from_raw_os_error(err)));
    }
    // SAFETY: the file is this process's own, in its data directory, and
    // is never truncated while mapped; its space is allocated above, so
    // writing into the mapping cannot fault for a full disk.
    unsafe { MmapMut::map_mut(file) }.map_err(io(path))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{}: {e}", path.display()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves the journal as
    // consistent as the file is: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn journal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("journal.{seq}.log"))
}

/// Journal files in `dir`, by sequence number.
fn journal_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("journal.")?.strip_suffix(".log")?.parse().ok());
        if let Some(seq) = seq {
            files.push((seq, path));
        }
    }
    files.sort();
    Ok(files)
}

fn create_journal(dir: &Path, seq: u64) -> Result<File, StoreError> {
    let path = journal_path(dir, seq);
    OpenOptions::new()
        .read(true) // a shared writable mapping needs both
        .write(true)
        .create_new(true) // sequence numbers only grow: never an old file
        .open(&path)
        .map_err(io(&path))
}

/// The row changes of journal files, in order, warning about a torn tail.
fn read_journals(files: &[(u64, PathBuf)]) -> Result<Vec<StoreOp>, StoreError> {
    let mut ops = Vec::new();
    for (_, path) in files {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let (file_ops, good) = decode_frames(&bytes);
        // Past the frames, the file's allocated space is zeros.
        if !is_zeros(&bytes[good..]) {
            tracing::warn!(
                file = %path.display(),
                offset = good,
                dropped_bytes = bytes.len() - good,
                "journal ends in a torn or corrupt frame; keeping what precedes it"
            );
        }
        ops.extend(file_ops);
    }
    Ok(ops)
}

/// The last change of each row, in journal order: what applying them all
/// would leave, for less redb work (a call's crash mark is written,
/// rewritten and deleted within seconds; a phone re-registers).
fn latest_per_row(ops: Vec<StoreOp>) -> Vec<StoreOp> {
    let mut last: foldhash::HashMap<(Table, &Key), usize> = foldhash::HashMap::default();
    for (i, op) in ops.iter().enumerate() {
        last.insert((op.table, &op.key), i);
    }
    if last.len() == ops.len() {
        return ops;
    }
    let keep: Vec<bool> = (0..ops.len())
        .map(|i| last.get(&(ops[i].table, &ops[i].key)) == Some(&i))
        .collect();
    drop(last);
    ops.into_iter()
        .zip(keep)
        .filter_map(|(op, k)| k.then_some(op))
        .collect()
}

impl JournaledStore {
    /// Opens redb in `dir`, replays the journal files into it, deletes
    /// them and starts the fold thread.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<Arc<JournaledStore>, StoreError> {
        let db = RedbStore::open(dir, cache_bytes)?;
        let files = journal_files(dir)?;
        let ops = latest_per_row(read_journals(&files)?);
        if !ops.is_empty() {
            db.apply_rows(&ops, true)?;
            tracing::info!(ops = ops.len(), "journal replayed into the store");
        }
        for (_, path) in &files {
            std::fs::remove_file(path).map_err(io(path))?;
        }
        let seq = files.last().map_or(0, |(s, _)| s + 1);
        let tail = Tail::create(dir, seq)?;
        let store = Arc::new_cyclic(|weak: &std::sync::Weak<JournaledStore>| {
            let weak = weak.clone();
            let fold_thread = std::thread::Builder::new()
                .name("store-fold".into())
                .spawn(move || fold_loop(weak))
                .expect("spawn the store fold thread");
            JournaledStore {
                dir: dir.to_path_buf(),
                db,
                tail: Mutex::new(tail),
                db_writes: Mutex::new(()),
                fold_thread: fold_thread.thread().clone(),
            }
        });
        Ok(store)
    }

    /// Applies the ops not yet folded (non-durably), so a read sees them.
    /// They are read back from the journal files, with commits held off
    /// meanwhile so the open file is read whole.
    fn catch_up(&self) -> Result<(), StoreError> {
        let _writing = lock(&self.db_writes);
        let ops = {
            let tail = lock(&self.tail);
            let files = journal_files(&self.dir)?;
            if tail.ops == 0 && files.len() <= 1 {
                return Ok(());
            }
            read_journals(&files)?
        };
        self.db.apply_rows(&ops, false)
    }

    /// Moves the journal into redb durably: a new file takes the next
    /// commits; the older ones are read back, applied in one transaction
    /// and deleted. (Not keeping the ops in memory until then spares the
    /// heap a second's worth of copies interleaved with live data.)
    fn fold(&self) -> Result<(), StoreError> {
        let _writing = lock(&self.db_writes);
        let (seq, old) = {
            let mut tail = lock(&self.tail);
            if tail.ops == 0 {
                return Ok(());
            }
            let seq = tail.seq + 1;
            (seq, std::mem::replace(&mut *tail, Tail::create(&self.dir, seq)?))
        };
        // Unmapped and cut to its frames (outside the lock: commits go on),
        // the old file is read back without its unused allocated space.
        let Tail { file, map, len, .. } = old;
        drop(map);
        if let Err(e) = file.set_len(len as u64) {
            tracing::warn!(error = %e, "could not cut the folded journal to its frames");
        }
        // Files of a fold that failed before are still there: retried here.
        let older: Vec<_> = journal_files(&self.dir)?
            .into_iter()
            .filter(|(s, _)| *s < seq)
            .collect();
        // A durable commit also makes earlier non-durable ones durable.
        self.db.apply_rows(&latest_per_row(read_journals(&older)?), true)?;
        for (_, path) in older {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }
}

/// Folds every interval, or when a commit wakes it, until the store is dropped.
fn fold_loop(store: std::sync::Weak<JournaledStore>) {
    loop {
        std::thread::park_timeout(FOLD_INTERVAL);
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = store.fold() {
            tracing::error!(error = %e, "folding the journal into the store failed");
        }
    }
}

impl Drop for JournaledStore {
    fn drop(&mut self) {
        if let Err(e) = self.fold() {
            tracing::error!(error = %e, "folding the journal at shutdown failed");
        }
        self.fold_thread.unpark();
    }
}

fn encode_frame(ops: &[StoreOp]) -> Result<Vec<u8>, StoreError> {
    let mut frame = Vec::with_capacity(512);
    frame.resize(HEADER, 0);
    rows::encode(ops, &mut frame);
    let len = (frame.len() - HEADER) as u32;
    let crc = crc32fast::hash(&frame[HEADER..]);
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// Whether `bytes` are all zero, eight at a time (a file left by a crash
/// has up to a megabyte of allocated space after its frames).
fn is_zeros(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    words.all(|w| u64::from_ne_bytes(w.try_into().expect("eight bytes")) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

/// The row changes of every whole, intact frame, and the length of those
/// frames; they end at the first frame that is not one (zeros included).
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
        let Some(frame_rows) = decode_payload(payload) else {
            break;
        };
        ops.extend(frame_rows);
        at = start + len;
    }
    (ops, at)
}

fn decode_payload(payload: &[u8]) -> Option<Vec<StoreOp>> {
    if payload.first() == Some(&rows::ROWS_V1) {
        return rows::decode(payload);
    }
    // A frame from before the binary form: the JSON list of ops.
    super::legacy::rows_of_json(payload)
}

impl StoreBackend for JournaledStore {
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let frame = encode_frame(ops)?;
        let mut tail = lock(&self.tail);
        let end = tail.len + frame.len();
        if end > tail.map.len() {
            let grown = end.max(2 * tail.map.len()).next_multiple_of(CHUNK);
            let path = journal_path(&self.dir, tail.seq);
            tail.map = map_journal(&tail.file, grown, &path)?;
        }
        let start = tail.len;
        tail.map[start..end].copy_from_slice(&frame);
        tail.len = end;
        tail.ops += ops.len();
        if tail.ops >= FOLD_OPS {
            self.fold_thread.unpark();
        }
        Ok(())
    }

    fn scan(&self, table: Table, scan: Scan, visit: &mut dyn FnMut(&Key, &Value) -> bool) -> Result<(), StoreError> {
        self.catch_up()?;
        self.db.scan(table, scan, visit)
    }

    fn get(&self, table: Table, key: &Key) -> Result<Option<Value>, StoreError> {
        self.catch_up()?;
        self.db.get(table, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(aor: &str, contact: &str) -> StoreOp {
        StoreOp::put_json(Table::Location, Key::text(aor), &[contact]).unwrap()
    }

    fn delete(aor: &str) -> StoreOp {
        StoreOp::delete(Table::Location, Key::text(aor))
    }

    #[test]
    fn only_the_last_change_of_a_row_is_applied_and_order_is_kept() {
        let ops = vec![
            put("a", "1"),
            put("b", "1"),
            put("a", "2"),
            delete("a"),
            put("c", "1"),
            put("b", "2"),
        ];
        assert_eq!(latest_per_row(ops), vec![delete("a"), put("c", "1"), put("b", "2")]);
        // The same key in two tables is two rows.
        let other = StoreOp::delete(Table::Cdr, Key::text("a"));
        assert_eq!(
            latest_per_row(vec![put("a", "1"), other.clone()]),
            vec![put("a", "1"), other]
        );
    }

    fn aors(s: &JournaledStore) -> Vec<String> {
        crate::store::all_rows(s, Table::Location)
            .unwrap()
            .into_iter()
            .map(|(k, _)| match k {
                Key::Text(t) => t,
                Key::Id(n) => n.to_string(),
            })
            .collect()
    }

    fn journal_names(dir: &Path) -> Vec<String> {
        let files = journal_files(dir).unwrap();
        files
            .iter()
            .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn unfolded_writes_are_read_then_folded_and_the_old_file_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        s.commit(&[put("1001@a", "sip:1@h"), put("1002@a", "sip:2@h")]).unwrap();
        assert_eq!(aors(&s), ["1001@a", "1002@a"]);
        s.commit(&[delete("1002@a")]).unwrap();
        assert_eq!(aors(&s), ["1001@a"]);
        assert!(std::fs::metadata(journal_path(dir.path(), 0)).unwrap().len() > 0);
        s.fold().unwrap();
        assert_eq!(journal_names(dir.path()), ["journal.1.log"]);
        s.commit(&[put("1003@a", "sip:3@h")]).unwrap();
        drop(s);
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(aors(&s), ["1001@a", "1003@a"]);
    }

    #[test]
    fn a_journal_outgrows_its_first_chunk_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        // Held, the fold thread cannot move the journal away meanwhile.
        let _no_fold = lock(&s.db_writes);
        let n = 6000; // about 2 MB of frames: the file grows past CHUNK
        let contact = format!("sip:{}@h", "1".repeat(300));
        for i in 0..n {
            s.commit(&[put(&format!("{i}@a"), &contact)]).unwrap();
        }
        let path = journal_path(dir.path(), 0);
        assert!(std::fs::metadata(&path).unwrap().len() >= 2 * CHUNK as u64);
        // What a kill -9 leaves: the mapped file as the kernel has it,
        // frames then zeros, read without the store's help.
        let rows = read_journals(&journal_files(dir.path()).unwrap()).unwrap();
        assert_eq!(rows.len(), n);
        assert_eq!(rows[n - 1], put(&format!("{}@a", n - 1), &contact));
        let bytes = std::fs::read(&path).unwrap();
        let end = lock(&s.tail).len;
        assert_eq!(decode_frames(&bytes).1, end);
        assert!(is_zeros(&bytes[end..]));
        let mut torn = bytes[end - 20..].to_vec();
        assert!(!is_zeros(&torn));
        torn[..20].fill(0);
        *torn.last_mut().unwrap() = 1;
        assert!(!is_zeros(&torn));
    }

    #[test]
    fn journals_left_by_a_crash_are_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        drop(JournaledStore::open(dir.path(), 1 << 20).unwrap());
        // What a daemon killed in the middle of a fold leaves: two files,
        // the newer one deleting what the older one put.
        std::fs::write(
            journal_path(dir.path(), 7),
            encode_frame(&[put("1001@a", "sip:1@h")]).unwrap(),
        )
        .unwrap();
        std::fs::write(
            journal_path(dir.path(), 8),
            encode_frame(&[delete("1001@a"), put("1002@a", "sip:2@h")]).unwrap(),
        )
        .unwrap();
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(aors(&s), ["1002@a"]);
        assert_eq!(journal_names(dir.path()), ["journal.9.log"]);
    }

    #[test]
    fn journals_written_as_json_by_an_older_version_are_still_replayed() {
        let dir = tempfile::tempdir().unwrap();
        drop(JournaledStore::open(dir.path(), 1 << 20).unwrap());
        let json_frame = |payload: &[u8]| {
            let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            frame.extend_from_slice(payload);
            frame
        };
        // An old frame, then a new one in the same file (an upgrade
        // between a crash and the restart cannot mix them, but reading
        // frame by frame must not care).
        let bytes = [
            json_frame(
                br#"[{"PutBindings":{"aor":"1001@a","bindings":["sip:1@h"]}},
                     {"PutBindings":{"aor":"1002@a","bindings":["sip:2@h"]}}]"#,
            ),
            encode_frame(&[delete("1001@a")]).unwrap(),
        ]
        .concat();
        std::fs::write(journal_path(dir.path(), 3), bytes).unwrap();
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(aors(&s), ["1002@a"]);
        let stored = s.get(Table::Location, &Key::text("1002@a")).unwrap().unwrap();
        assert_eq!(stored.json::<Vec<String>>().unwrap(), ["sip:2@h"]);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_what_precedes_it_kept() {
        let a = encode_frame(&[put("1001@a", "sip:1@h")]).unwrap();
        let b = encode_frame(&[put("1002@a", "sip:2@h")]).unwrap();
        let mut bytes = [a.clone(), b.clone()].concat();
        let (ops, good) = decode_frames(&bytes);
        assert_eq!((ops.len(), good), (2, bytes.len()));
        bytes.truncate(a.len() + b.len() - 3);
        let first = put("1001@a", "sip:1@h");
        assert_eq!(decode_frames(&bytes), (vec![first], a.len()));
        let mut flipped = [a.clone(), b].concat();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        assert_eq!(decode_frames(&flipped).1, a.len());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(journal_path(dir.path(), 0), &bytes).unwrap();
        let s = JournaledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(aors(&s), ["1001@a"]);
    }
}
