//! Reading recordings back: the segments of one or more recording directories (or
//! single segment files), in order, every record's checksum checked. A damaged or torn
//! record ends its segment with a note of where; the reader goes on with the next.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::format::{MAX_RECORD, RECORD_HEADER, Record, SEGMENT_MAGIC, checks, decode, segment_id};

/// The segment files named by `paths` (directories of a recording, or segment files),
/// in order: each directory's by id, then as given.
///
/// # Errors
///
/// When a path cannot be read, or names neither a directory nor a segment file.
pub fn segments(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read recording directory {}", p.display()))?
                .filter_map(|e| {
                    let e = e.ok()?;
                    Some((segment_id(e.file_name().to_str()?)?, e.path()))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{} holds no recording segments (*.wrec)", p.display());
            }
            out.extend(found.into_iter().map(|(_, p)| p));
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!(
                "{}: no such recording directory or segment file",
                p.display()
            );
        }
    }
    Ok(out)
}

/// Where a recording was damaged: the segment and the byte offset of the first record
/// that did not check, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// Calls `each` with every record of `segments` in order; returns where records were
/// damaged (a torn tail is one).
///
/// # Errors
///
/// When a segment cannot be opened or is not a recording segment, or `each` fails.
pub fn read_all(
    segments: &[PathBuf],
    mut each: impl FnMut(Record) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Damage>> {
    let mut damage = Vec::new();
    for path in segments {
        if let Some(d) = read_segment(path, &mut each)? {
            damage.push(d);
        }
    }
    Ok(damage)
}

fn read_segment(
    path: &Path,
    each: &mut impl FnMut(Record) -> anyhow::Result<()>,
) -> anyhow::Result<Option<Damage>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = BufReader::with_capacity(256 * 1024, file);
    let mut magic = [0u8; 8];
    if r.read_exact(&mut magic).is_err() || &magic != SEGMENT_MAGIC {
        bail!("{} is not a wasmrule recording segment", path.display());
    }
    let mut offset = magic.len() as u64;
    let mut payload = Vec::new();
    let damaged = |offset, reason: &str| {
        Ok(Some(Damage {
            segment: path.to_owned(),
            offset,
            reason: reason.to_owned(),
        }))
    };
    loop {
        let mut head = [0u8; RECORD_HEADER];
        match read_full(&mut r, &mut head) {
            Ok(0) => return Ok(None),
            Ok(n) if n < head.len() => return damaged(offset, "torn record header"),
            Ok(_) => {}
            Err(e) => return damaged(offset, &format!("read error: {e}")),
        }
        let len_bytes: [u8; 4] = head[..4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(len_bytes) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return damaged(offset, "record length out of range");
        }
        payload.resize(len, 0);
        match read_full(&mut r, &mut payload) {
            Ok(n) if n < len => return damaged(offset, "torn record"),
            Ok(_) => {}
            Err(e) => return damaged(offset, &format!("read error: {e}")),
        }
        if !checks(len_bytes, crc, &payload) {
            return damaged(offset, "checksum mismatch");
        }
        let Some(record) = decode(&payload) else {
            return damaged(offset, "malformed record");
        };
        each(record)?;
        offset += (RECORD_HEADER + len) as u64;
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::config::RecordConfig;
    use crate::record::format::{Encoder, frame};
    use crate::record::writer::{RecordStats, Recorder};

    /// Event `i`, framed, as a worker hands it over.
    fn event(i: u64) -> (Vec<u8>, u64) {
        let mut b = Vec::new();
        let mut e = Encoder(&mut b);
        e.event(i, "t/1", format!("{{\"i\":{i}}}").as_bytes());
        e.invocations(0);
        let mut framed = Vec::new();
        frame(&b, &mut framed);
        (framed, 1)
    }

    fn times(dir: &Path) -> (Vec<u64>, Vec<Damage>) {
        let mut seen = Vec::new();
        let damage = read_all(&segments(&[dir.to_owned()]).unwrap(), |r| {
            if let Record::Event(e) = r {
                seen.push(e.time_ms);
            }
            Ok(())
        })
        .unwrap();
        (seen, damage)
    }

    #[test]
    fn a_recording_reads_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RecordConfig::new(dir.path());
        config.segment_bytes = 4096;
        config.max_bytes = 1 << 20;
        let (rec, thread) = Recorder::start(&config, Arc::default()).unwrap();
        for i in 0..1000 {
            // The queue holds all of them: nothing is lost.
            let (chunk, n) = event(i);
            rec.send(chunk, n);
        }
        drop(rec);
        thread.join();
        let (seen, damage) = times(dir.path());
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert!(damage.is_empty());
        assert!(segments(&[dir.path().to_owned()]).unwrap().len() > 2);
    }

    #[test]
    fn old_segments_go_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RecordConfig::new(dir.path());
        config.segment_bytes = 4096;
        config.max_bytes = 3 * 4096;
        let (rec, thread) = Recorder::start(&config, Arc::default()).unwrap();
        for i in 0..2000 {
            let (chunk, n) = event(i);
            rec.send(chunk, n);
        }
        drop(rec);
        thread.join();
        let total: u64 = segments(&[dir.path().to_owned()])
            .unwrap()
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum();
        assert!(total <= 3 * 4096, "{total} bytes kept");
        let (seen, _) = times(dir.path());
        // The newest are kept, in order, up to the last.
        assert_eq!(seen.last(), Some(&1999));
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(seen.len() < 2000);
    }

    #[test]
    fn a_torn_tail_is_reported_and_what_precedes_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig::new(dir.path());
        let (rec, thread) = Recorder::start(&config, Arc::new(RecordStats::default())).unwrap();
        for i in 0..10 {
            let (chunk, n) = event(i);
            rec.send(chunk, n);
        }
        drop(rec);
        thread.join();
        let seg = segments(&[dir.path().to_owned()]).unwrap().remove(0);
        let len = seg.metadata().unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let (seen, damage) = times(dir.path());
        assert_eq!(seen, (0..9).collect::<Vec<_>>());
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].reason, "torn record");
        // A flipped byte is a checksum mismatch.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&seg, bytes).unwrap();
        let (seen, damage) = times(dir.path());
        assert!(seen.is_empty());
        assert_eq!(damage[0].reason, "checksum mismatch");
    }
}
