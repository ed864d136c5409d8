//! The files of a spill directory and their format: numbered segment files of
//! checksummed records, the cursor, the lock. Reading and writing records through them
//! is `log.rs`.
//!
//! # Files
//!
//! In the spill directory (created mode 0700; files 0600):
//!
//! - `<id>.seg` (`id` in 20 digits, increasing): an 8-byte header `WRSPILL` + format
//!   version 1, then records. A record is `len: u32 LE`, `crc: u32 LE`, `len` bytes of
//!   payload; `crc` is CRC-32 (IEEE) over the length bytes and the payload, so a flipped
//!   length is caught as surely as a flipped payload byte.
//! - `cursor`: the position up to which records have been replayed (segment, offset),
//!   checksummed, overwritten in place after each replayed pipeline (one 28-byte
//!   `pwrite`; a write-and-`rename` costs about 0.4 ms on ext4, which would slow the
//!   replay by a fifth). Segments before it are deleted; a missing or damaged cursor
//!   means "from the first segment".
//! - `lock`: held with `flock` while a process uses the directory.
//!

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, bail};

/// Segment header: magic and format version.
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"WRSPILL\x01";
pub const SEGMENT_HEADER: u64 = SEGMENT_MAGIC.len() as u64;
/// Record header: length and checksum, 4 bytes each.
pub const RECORD_HEADER: u64 = 8;
pub(super) const CURSOR_MAGIC: &[u8; 8] = b"WRSPCUR\x01";
pub(super) const CURSOR_FILE: &str = "cursor";
pub(super) const LOCK_FILE: &str = "lock";

/// A place in the log: before the record that starts at `offset` in segment `segment`.
/// Positions only grow as records are appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// Creates the directory if needed and takes its lock file: one process per spill.
pub(super) fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create spill directory {}", dir.display()))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
        .with_context(|| format!("cannot open {}", dir.join(LOCK_FILE).display()))?;
    if let Err(e) = lock.try_lock() {
        bail!(
            "spill directory {} is in use by another process ({e}); give each wasmrule its own",
            dir.display()
        );
    }
    Ok(lock)
}

/// The segment files in `dir` (id -> length), each checked to be of this format;
/// empty ones a crash left behind are removed.
pub(super) fn scan_segments(dir: &Path) -> anyhow::Result<BTreeMap<u64, u64>> {
    let mut segments = BTreeMap::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read spill directory {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(len) = check_segment(&entry.path())? {
            segments.insert(id, len);
        }
    }
    Ok(segments)
}

/// A segment's length, after checking its header; `None` for an empty one (removed).
fn check_segment(path: &Path) -> anyhow::Result<Option<u64>> {
    let mut magic = [0u8; SEGMENT_MAGIC.len()];
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    if len < SEGMENT_HEADER {
        // Created, then the process died before the header was written.
        tracing::warn!(segment = %path.display(), "removing an empty spill segment");
        let _ = std::fs::remove_file(path);
        return Ok(None);
    }
    file.read_exact_at(&mut magic, 0)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if &magic != SEGMENT_MAGIC {
        bail!(
            "{} is not a wasmrule spill segment of format 1 (header {:?}); move it away",
            path.display(),
            String::from_utf8_lossy(&magic)
        );
    }
    Ok(Some(len))
}

/// The saved cursor; `None` when it is missing or damaged (replay from the first
/// segment).
pub(super) fn read_cursor(path: &Path) -> Option<Pos> {
    let bytes = std::fs::read(path).ok()?;
    let ok = bytes.len() == 28
        && bytes[..8] == CURSOR_MAGIC[..]
        && crc32fast::hash(&bytes[..24]).to_le_bytes()[..] == bytes[24..];
    if !ok {
        tracing::warn!(
            "ignoring a damaged spill cursor {}; replaying from the first segment",
            path.display()
        );
        return None;
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Some(Pos {
        segment: u64_at(8),
        offset: u64_at(16),
    })
}

/// The cursor file's 28 bytes for `pos`: magic, segment, offset, CRC-32 of those.
pub(super) fn encode_cursor(pos: Pos) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(28);
    bytes.extend_from_slice(CURSOR_MAGIC);
    bytes.extend_from_slice(&pos.segment.to_le_bytes());
    bytes.extend_from_slice(&pos.offset.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    bytes
}
