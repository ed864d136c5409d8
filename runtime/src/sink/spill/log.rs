//! The spill's on-disk format: an append-only log of opaque records in numbered segment
//! files, a read cursor, and the bounds. It knows bytes, files and checksums; what a
//! record holds (`sink/batch.rs`) and when to spill (`backlog.rs`) are not its concern.
//!
//! The files (segments, cursor, lock) and their format are `format.rs`.
//!
//! Appends go to a segment this process created (never to one found at open), which is
//! closed at `segment_bytes` and a new one started, so that replayed segments can be
//! deleted whole: space is reclaimed a segment at a time. The total size of the segment
//! files never exceeds `max_bytes`: an append that would cross it is refused
//! ([`AppendError::Full`]).
//!
//! # Durability
//!
//! Each record reaches the kernel with one `write(2)` as it is appended, so a crash or
//! SIGKILL of wasmrule loses nothing appended. A background thread `fdatasync`s the
//! segment being written at most once per second while it changes, a closed segment at
//! once, and the directory after a segment is created; a power failure can lose up to
//! about the last second. The cursor is not synced: after a power failure, more may be
//! replayed twice.
//!
//! # Damage
//!
//! A record cut short at the end of a segment (a crash mid-write) is dropped with a
//! warning. A record whose checksum does not match, or a read error, drops the rest of
//! its segment with an error line: past a bad length nothing can be trusted to be a
//! record boundary. Both are counted ([`SpillLog::dropped`]). A segment whose header is
//! not this format stops startup rather than being guessed at.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use crate::sink::spill::format::Pos;
use crate::sink::spill::format::{
    CURSOR_FILE, RECORD_HEADER, SEGMENT_HEADER, SEGMENT_MAGIC, encode_cursor, lock_dir,
    read_cursor, scan_segments,
};
use crate::sink::spill::sync::{SyncMsg, Syncer};

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The record would take the log past its bound.
    #[error("spill full: {used} of {max} bytes used, a record needs {needed}")]
    Full { used: u64, max: u64, needed: u64 },
    #[error("cannot write to the spill: {0}")]
    Io(#[from] std::io::Error),
}

/// The log in one directory, opened by one process at a time.
pub struct SpillLog {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    // Held for the lifetime of the log: the flock is released when it closes.
    _lock: File,
    /// Segments on disk by id, with their length in bytes.
    segments: BTreeMap<u64, u64>,
    /// The segment this process appends to.
    active: Option<Active>,
    next_id: u64,
    /// Sum of `segments`' lengths.
    total: u64,
    /// Everything before this position has been replayed.
    committed: Pos,
    reader: Option<(u64, File)>,
    dropped: u64,
    /// The open `cursor` file, once written.
    cursor: Option<File>,
    cursor_warned: bool,
    record: Vec<u8>,
    syncer: Syncer,
}

struct Active {
    id: u64,
    file: File,
    len: u64,
}

/// What [`SpillLog::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub payload: Vec<u8>,
    /// Where the record starts (after any damage skipped to reach it).
    pub at: Pos,
    /// Just after the record: where the next read starts.
    pub next: Pos,
}

impl SpillLog {
    /// Opens (creating if needed) the log in `dir`, keeping what a previous process left
    /// there to be replayed.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or read, another process holds it, or a
    /// segment is not in this format.
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> anyhow::Result<SpillLog> {
        let lock = lock_dir(dir)?;
        let segments = scan_segments(dir)?;
        let next_id = segments.keys().next_back().map_or(1, |last| last + 1);
        let first = segments
            .keys()
            .next()
            .map_or(next_id, |&first| first.max(1));
        let mut committed = Pos {
            segment: first,
            offset: SEGMENT_HEADER,
        };
        if let Some(c) = read_cursor(&dir.join(CURSOR_FILE))
            && segments.contains_key(&c.segment)
            && c.offset >= SEGMENT_HEADER
        {
            committed = c;
        }
        let mut log = SpillLog {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes,
            _lock: lock,
            segments,
            active: None,
            next_id,
            total: 0,
            committed,
            reader: None,
            dropped: 0,
            cursor: None,
            cursor_warned: false,
            record: Vec::new(),
            syncer: Syncer::start(dir),
        };
        // Segments wholly before the cursor were replayed before the last stop.
        let replayed: Vec<u64> = log
            .segments
            .range(..committed.segment)
            .map(|(&id, _)| id)
            .collect();
        for id in replayed {
            log.remove_segment(id);
        }
        log.total = log.segments.values().sum();
        if log.is_empty() {
            log.clear();
        }
        Ok(log)
    }

    /// Where the next record will go.
    pub fn end(&self) -> Pos {
        match &self.active {
            Some(a) => Pos {
                segment: a.id,
                offset: a.len,
            },
            None => Pos {
                segment: self.next_id,
                offset: SEGMENT_HEADER,
            },
        }
    }

    /// Where replay starts: every record before it has been replayed.
    pub fn start(&self) -> Pos {
        self.committed
    }

    /// Whether nothing is left to replay.
    pub fn is_empty(&self) -> bool {
        self.committed >= self.end()
    }

    /// Bytes the segment files take on disk now.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Records dropped as torn or damaged since the log was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether a record of `len` payload bytes would fit now.
    pub fn has_room(&self, len: usize) -> bool {
        self.room_needed(len) <= self.max_bytes.saturating_sub(self.total)
    }

    fn needs_new_segment(&self, record: u64) -> bool {
        match &self.active {
            // A segment holds at least one record, however large.
            Some(a) => a.len > SEGMENT_HEADER && a.len + record > self.segment_bytes,
            None => true,
        }
    }

    fn room_needed(&self, len: usize) -> u64 {
        let record = RECORD_HEADER + len as u64;
        if self.needs_new_segment(record) {
            record + SEGMENT_HEADER
        } else {
            record
        }
    }

    /// Appends one record.
    ///
    /// # Errors
    ///
    /// [`AppendError::Full`] when it would not fit in `max_bytes` (nothing is written);
    /// [`AppendError::Io`] when the disk refused it (a partial write is rolled back, or,
    /// if that fails too, left as a torn tail that replay drops).
    pub fn append(&mut self, payload: &[u8]) -> Result<(), AppendError> {
        let needed = self.room_needed(payload.len());
        if payload.len() > u32::MAX as usize || !self.has_room(payload.len()) {
            return Err(AppendError::Full {
                used: self.total,
                max: self.max_bytes,
                needed,
            });
        }
        if self.needs_new_segment(RECORD_HEADER + payload.len() as u64) {
            self.new_segment()?;
        }
        self.record.clear();
        let len = (payload.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len);
        crc.update(payload);
        self.record.extend_from_slice(&len);
        self.record.extend_from_slice(&crc.finalize().to_le_bytes());
        self.record.extend_from_slice(payload);
        // Just ensured by new_segment when there was none.
        let Some(a) = self.active.as_mut() else {
            return Err(AppendError::Io(std::io::Error::other("no segment open")));
        };
        match a.file.write_all(&self.record) {
            Ok(()) => {
                a.len += self.record.len() as u64;
                self.total += self.record.len() as u64;
                self.segments.insert(a.id, a.len);
                self.syncer.mark_dirty();
                Ok(())
            }
            Err(e) => {
                // Cut a partial record off so the next one starts on a boundary. If even
                // that fails, stop appending here: replay drops the torn tail.
                if a.file.set_len(a.len).is_err() {
                    let id = a.id;
                    let on_disk = a.file.metadata().map_or(a.len, |m| m.len());
                    self.total += on_disk - a.len.min(on_disk);
                    self.segments.insert(id, on_disk);
                    self.close_active();
                }
                Err(AppendError::Io(e))
            }
        }
    }

    fn new_segment(&mut self) -> std::io::Result<()> {
        self.close_active();
        let id = self.next_id;
        let path = self.segment_path(id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        if let Err(e) = file.write_all(SEGMENT_MAGIC) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        self.next_id += 1;
        self.segments.insert(id, SEGMENT_HEADER);
        self.total += SEGMENT_HEADER;
        if let Ok(dup) = file.try_clone() {
            self.syncer.send(SyncMsg::Active(dup));
        }
        self.active = Some(Active {
            id,
            file,
            len: SEGMENT_HEADER,
        });
        Ok(())
    }

    fn close_active(&mut self) {
        if let Some(a) = self.active.take() {
            self.syncer.send(SyncMsg::Closed(a.file));
        }
    }

    /// The first record at or after `at`, skipping what replay must drop; `None` when
    /// there is none before [`SpillLog::end`].
    pub fn read(&mut self, mut at: Pos) -> Option<Record> {
        loop {
            if at >= self.end() {
                return None;
            }
            let (&id, &len) = self.segments.range(at.segment..).next()?;
            if id != at.segment {
                at = Pos {
                    segment: id,
                    offset: SEGMENT_HEADER,
                };
            }
            let active = self.active.as_ref().is_some_and(|a| a.id == id);
            if at.offset >= len {
                if active {
                    return None;
                }
                at = Pos {
                    segment: id + 1,
                    offset: SEGMENT_HEADER,
                };
                continue;
            }
            match self.read_at(id, at.offset, len) {
                Ok(payload) => {
                    let next = Pos {
                        segment: id,
                        offset: at.offset + RECORD_HEADER + payload.len() as u64,
                    };
                    return Some(Record { payload, at, next });
                }
                Err(damage) => {
                    self.dropped += 1;
                    let segment = self.segment_path(id);
                    match damage {
                        Damage::Torn(left) => tracing::warn!(
                            segment = %segment.display(),
                            offset = at.offset,
                            "dropping a spilled record cut short at the end of its segment \
                             ({left} bytes; a write interrupted by a crash)"
                        ),
                        Damage::Corrupt => tracing::error!(
                            segment = %segment.display(),
                            offset = at.offset,
                            "spilled record fails its checksum; dropping the rest of the segment"
                        ),
                        Damage::Io(e) => tracing::error!(
                            segment = %segment.display(),
                            offset = at.offset,
                            "cannot read the spill: {e}; dropping the rest of the segment"
                        ),
                    }
                    at = Pos {
                        segment: id + 1,
                        offset: SEGMENT_HEADER,
                    };
                }
            }
        }
    }

    fn read_at(&mut self, id: u64, offset: u64, limit: u64) -> Result<Vec<u8>, Damage> {
        if self.reader.as_ref().is_none_or(|(r, _)| *r != id) {
            let file = File::open(self.segment_path(id)).map_err(Damage::Io)?;
            self.reader = Some((id, file));
        }
        let Some((_, file)) = &self.reader else {
            return Err(Damage::Corrupt);
        };
        let left = limit - offset;
        if left < RECORD_HEADER {
            return Err(Damage::Torn(left));
        }
        let mut header = [0u8; RECORD_HEADER as usize];
        file.read_exact_at(&mut header, offset)
            .map_err(Damage::Io)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if u64::from(len) > left - RECORD_HEADER {
            return Err(Damage::Torn(left));
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, offset + RECORD_HEADER)
            .map_err(Damage::Io)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&header[..4]);
        h.update(&payload);
        if h.finalize() != crc {
            return Err(Damage::Corrupt);
        }
        Ok(payload)
    }

    /// Records before `pos` have been replayed: deletes the segments wholly before it and
    /// saves the cursor; when nothing is left, removes every segment.
    pub fn commit(&mut self, pos: Pos) {
        self.committed = pos;
        if self.is_empty() {
            self.clear();
            return;
        }
        let replayed: Vec<u64> = self
            .segments
            .range(..pos.segment)
            .map(|(&id, _)| id)
            .collect();
        for id in replayed {
            self.remove_segment(id);
        }
        let bytes = encode_cursor(pos);
        if let Err(e) = self.save_cursor(&bytes)
            && !std::mem::replace(&mut self.cursor_warned, true)
        {
            tracing::warn!(
                "cannot save the spill cursor in {}: {e}; after a crash, more may be replayed twice",
                self.dir.display()
            );
        }
    }

    fn save_cursor(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = match self.cursor.take() {
            Some(f) => f,
            None => OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(self.dir.join(CURSOR_FILE))?,
        };
        file.write_all_at(bytes, 0)?;
        self.cursor = Some(file);
        Ok(())
    }

    /// Everything replayed: no segment, no cursor, the next append starts afresh.
    fn clear(&mut self) {
        self.close_active();
        let ids: Vec<u64> = self.segments.keys().copied().collect();
        for id in ids {
            self.remove_segment(id);
        }
        self.cursor = None;
        let _ = std::fs::remove_file(self.dir.join(CURSOR_FILE));
        self.total = 0;
        self.committed = self.end();
    }

    fn remove_segment(&mut self, id: u64) {
        if self.reader.as_ref().is_some_and(|(r, _)| *r == id) {
            self.reader = None;
        }
        if let Some(len) = self.segments.remove(&id) {
            self.total = self.total.saturating_sub(len);
        }
        let path = self.segment_path(id);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(
                "cannot remove replayed spill segment {}: {e}",
                path.display()
            );
        }
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.seg"))
    }
}

enum Damage {
    /// The record runs past the end of its segment; this many bytes were left.
    Torn(u64),
    Corrupt,
    Io(std::io::Error),
}

impl Drop for SpillLog {
    /// Syncs what was appended and stops the sync thread.
    fn drop(&mut self) {
        self.close_active();
        self.syncer.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn open(dir: &Path) -> SpillLog {
        SpillLog::open(dir, MB, 4096).unwrap()
    }

    fn record(i: usize) -> Vec<u8> {
        format!("record {i} {}", "x".repeat(i % 50)).into_bytes()
    }

    /// Reads everything from the start; returns the payloads and the end position.
    fn read_all(log: &mut SpillLog) -> (Vec<Vec<u8>>, Pos) {
        let mut at = log.start();
        let mut out = Vec::new();
        while let Some(r) = log.read(at) {
            assert!(r.at >= at && r.next > r.at);
            out.push(r.payload);
            at = r.next;
        }
        (out, at.max(log.end()))
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        assert!(log.is_empty());
        for i in 0..200 {
            log.append(&record(i)).unwrap();
        }
        assert!(!log.is_empty());
        assert!(segment_files(dir.path()).len() > 2, "4 KiB segments rotate");
        assert_eq!(
            log.bytes(),
            segment_files(dir.path())
                .iter()
                .map(|p| p.metadata().unwrap().len())
                .sum::<u64>()
        );
        let (got, _) = read_all(&mut log);
        assert_eq!(got, (0..200).map(record).collect::<Vec<_>>());
        drop(log);

        // A new process finds everything, and appends after it.
        let mut log = open(dir.path());
        log.append(b"after restart").unwrap();
        let (got, end) = read_all(&mut log);
        assert_eq!(got.len(), 201);
        assert_eq!(got[200], b"after restart");
        log.commit(end);
        assert!(log.is_empty());
        assert_eq!(log.bytes(), 0);
        assert!(
            segment_files(dir.path()).is_empty(),
            "drained: nothing on disk"
        );
    }

    #[test]
    fn replayed_segments_are_deleted_and_the_cursor_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        for i in 0..200 {
            log.append(&record(i)).unwrap();
        }
        let before = log.bytes();
        let files = segment_files(dir.path()).len();
        let mut at = log.start();
        for _ in 0..120 {
            at = log.read(at).unwrap().next;
        }
        log.commit(at);
        assert!(log.bytes() < before, "space reclaimed");
        assert!(segment_files(dir.path()).len() < files);
        drop(log);

        let mut log = open(dir.path());
        assert_eq!(log.start(), at);
        let (got, _) = read_all(&mut log);
        assert_eq!(got, (120..200).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_last_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        for i in 0..3 {
            log.append(&record(i)).unwrap();
        }
        drop(log);
        // A crash in the middle of the third record's write.
        let seg = segment_files(dir.path()).pop().unwrap();
        let len = seg.metadata().unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);

        let mut log = open(dir.path());
        log.append(b"new").unwrap();
        let (got, end) = read_all(&mut log);
        assert_eq!(got, vec![record(0), record(1), b"new".to_vec()]);
        assert_eq!(log.dropped(), 1);
        log.commit(end);
        assert!(log.is_empty());
    }

    #[test]
    fn a_record_cut_in_its_header_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        log.append(b"one").unwrap();
        drop(log);
        let seg = segment_files(dir.path()).pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[7, 0, 0]).unwrap();
        drop(f);
        let mut log = open(dir.path());
        let (got, _) = read_all(&mut log);
        assert_eq!(got, vec![b"one".to_vec()]);
        assert_eq!(log.dropped(), 1);
    }

    #[test]
    fn a_checksum_mismatch_drops_the_rest_of_its_segment_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let mut first_segment = 0;
        for i in 0..200 {
            log.append(&record(i)).unwrap();
            if log.end().segment == 1 {
                first_segment = i + 1;
            }
        }
        drop(log);
        let seg = &segment_files(dir.path())[0];
        // Flip a payload byte of the second record.
        let second = SEGMENT_HEADER + RECORD_HEADER + record(0).len() as u64;
        let f = OpenOptions::new().read(true).write(true).open(seg).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, second + RECORD_HEADER + 2).unwrap();
        f.write_all_at(&[b[0] ^ 0x55], second + RECORD_HEADER + 2)
            .unwrap();
        drop(f);

        let mut log = open(dir.path());
        let (got, _) = read_all(&mut log);
        let mut want = vec![record(0)];
        want.extend((first_segment..200).map(record));
        assert_eq!(got, want);
        assert_eq!(log.dropped(), 1);
    }

    #[test]
    fn a_flipped_length_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        log.append(b"aaaa").unwrap();
        log.append(b"bbbb").unwrap();
        drop(log);
        let seg = segment_files(dir.path()).pop().unwrap();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        // Length 4 -> 3: still inside the file, so only the checksum can tell.
        f.write_all_at(&[3], SEGMENT_HEADER).unwrap();
        drop(f);
        let mut log = open(dir.path());
        assert_eq!(read_all(&mut log).0, Vec::<Vec<u8>>::new());
        assert_eq!(log.dropped(), 1);
    }

    #[test]
    fn the_bound_is_never_crossed() {
        let dir = tempfile::tempdir().unwrap();
        let max = 16 * 1024;
        let mut log = SpillLog::open(dir.path(), max, 4096).unwrap();
        let payload = vec![b'p'; 1000];
        let mut n = 0;
        loop {
            match log.append(&payload) {
                Ok(()) => n += 1,
                Err(AppendError::Full {
                    used,
                    max: m,
                    needed,
                }) => {
                    assert_eq!(m, max);
                    assert!(used + needed > max);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            assert!(log.bytes() <= max);
        }
        assert!(n >= 14, "{n} records of 1 KB in 16 KiB");
        assert!(!log.has_room(payload.len()));
        assert!(matches!(
            log.append(&vec![0; 64 << 10]),
            Err(AppendError::Full { .. })
        ));
        let on_disk: u64 = segment_files(dir.path())
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum();
        assert!(on_disk <= max, "{on_disk} bytes on disk");

        // Replaying the first segment frees room again.
        let mut at = log.start();
        while at.segment == log.start().segment {
            at = log.read(at).unwrap().next;
        }
        log.commit(at);
        assert!(log.has_room(payload.len()));
        log.append(&payload).unwrap();
    }

    #[test]
    fn one_process_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _log = open(dir.path());
        let e = SpillLog::open(dir.path(), MB, 4096).err().unwrap();
        assert!(
            format!("{e:#}").contains("in use by another process"),
            "{e:#}"
        );
    }

    #[test]
    fn a_foreign_segment_stops_startup() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("00000000000000000001.seg"),
            b"something else",
        )
        .unwrap();
        let e = SpillLog::open(dir.path(), MB, 4096).err().unwrap();
        assert!(
            format!("{e:#}").contains("not a wasmrule spill segment"),
            "{e:#}"
        );
        // An empty one (a crash right after creating it) is just removed.
        std::fs::write(dir.path().join("00000000000000000001.seg"), b"WRS").unwrap();
        let log = open(dir.path());
        assert!(log.is_empty());
    }

    #[test]
    fn a_damaged_cursor_replays_from_the_first_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        for i in 0..3 {
            log.append(&record(i)).unwrap();
        }
        let next = log.read(log.start()).unwrap().next;
        log.commit(next);
        drop(log);
        let cursor = dir.path().join(CURSOR_FILE);
        let mut bytes = std::fs::read(&cursor).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&cursor, bytes).unwrap();
        let mut log = open(dir.path());
        assert_eq!(read_all(&mut log).0.len(), 3, "replays more, never less");
    }
}
