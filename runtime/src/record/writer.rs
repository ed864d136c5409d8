//! The recorder: a thread that appends the records workers hand it to the recording's
//! segments, rotating and deleting by the configured bounds. Workers frame their records
//! themselves and hand them over in chunks of whole records (a worker's round, at most
//! about [`CHUNK`] bytes), so a record costs no queue operation or allocation of its
//! own. Workers never wait for the disk: a chunk goes into a bounded queue, and one that
//! does not fit is counted as lost and written as a gap record where it would have
//! been, so a replay says how much of the traffic it did not see.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use anyhow::Context;

use super::config::RecordConfig;
use super::format::{Encoder, SEGMENT_MAGIC, frame, segment_id, segment_name};
use crate::event::now_ms;

/// Chunks waiting for the recorder thread.
const QUEUE: usize = 4096;
/// A worker hands its chunk over at this size, or at the end of its round.
pub const CHUNK: usize = 64 * 1024;
/// How long written records may sit in the file's buffer while the queue is idle.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What the recorder did, for `/metrics`.
#[derive(Debug, Default)]
pub struct RecordStats {
    /// Events written.
    pub events: AtomicU64,
    /// Bytes written, headers included.
    pub bytes: AtomicU64,
    /// Events lost because the queue was full.
    pub lost: AtomicU64,
}

/// The workers' side of the recorder: cloned into each worker.
#[derive(Clone)]
pub struct Recorder {
    tx: SyncSender<(Vec<u8>, u64)>,
    stats: Arc<RecordStats>,
}

/// The recorder thread, to join at shutdown once every [`Recorder`] is dropped.
pub struct RecorderThread {
    thread: std::thread::JoinHandle<()>,
}

impl RecorderThread {
    /// Waits for the last records to be written and synced.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the recorder thread panicked");
        }
    }
}

impl Recorder {
    /// Opens (creating) the recording directory and starts the recorder thread.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or written.
    pub fn start(
        config: &RecordConfig,
        stats: Arc<RecordStats>,
    ) -> anyhow::Result<(Recorder, RecorderThread)> {
        let segments = Segments::open(config)?;
        let (tx, rx) = sync_channel(QUEUE);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("wasmrule-recorder".into())
            .spawn(move || write_loop(rx, segments, &thread_stats))
            .context("cannot start the recorder thread")?;
        tracing::info!(dir = %config.dir.display(), "recording events into {}", config.dir.display());
        Ok((Recorder { tx, stats }, RecorderThread { thread }))
    }

    /// Hands `chunk`, `events` whole framed records ([`frame`]), to the recorder;
    /// counts them lost when the queue is full.
    pub fn send(&self, chunk: Vec<u8>, events: u64) {
        match self.tx.try_send((chunk, events)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.lost.fetch_add(events, Ordering::Relaxed);
            }
        }
    }
}

fn write_loop(rx: Receiver<(Vec<u8>, u64)>, mut segments: Segments, stats: &RecordStats) {
    let mut gap_buf = Vec::new();
    let mut lost_written = 0;
    let mut failed = false;
    loop {
        let (chunk, events) = match rx.recv_timeout(FLUSH_EVERY) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = segments.flush() {
                    report(&mut failed, &e);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Lost events are noted where they were lost, before the next ones kept.
        let lost = stats.lost.load(Ordering::Relaxed);
        if lost > lost_written {
            let mut gap = Vec::new();
            Encoder(&mut gap).gap(now_ms(), lost - lost_written);
            gap_buf.clear();
            frame(&gap, &mut gap_buf);
            if segments.append(&gap_buf).is_ok() {
                lost_written = lost;
            }
        }
        match segments.append(&chunk) {
            Ok(()) => {
                failed = false;
                stats.events.fetch_add(events, Ordering::Relaxed);
                stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                stats.lost.fetch_add(events, Ordering::Relaxed);
                report(&mut failed, &e);
            }
        }
    }
    if let Err(e) = segments.close() {
        tracing::error!("recording: {e:#}");
    }
}

/// Logs a write failure once until writes work again.
fn report(failed: &mut bool, e: &anyhow::Error) {
    if !*failed {
        tracing::error!("recording: {e:#}; events are counted as lost until it works again");
        *failed = true;
    }
}

/// The directory's segments: the one being written, and the sizes of the others.
struct Segments {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    // Closed segments, oldest first: id and size.
    closed: Vec<(u64, u64)>,
    current: Option<(u64, BufWriter<File>, u64)>,
    next_id: u64,
}

impl Segments {
    fn open(config: &RecordConfig) -> anyhow::Result<Segments> {
        std::fs::create_dir_all(&config.dir).with_context(|| {
            format!("cannot create recording directory {}", config.dir.display())
        })?;
        let mut closed = Vec::new();
        for entry in std::fs::read_dir(&config.dir)
            .with_context(|| format!("cannot read recording directory {}", config.dir.display()))?
        {
            let entry = entry?;
            if let Some(id) = entry.file_name().to_str().and_then(segment_id) {
                closed.push((id, entry.metadata()?.len()));
            }
        }
        closed.sort_unstable();
        // A restart goes on after the segments already there; they are kept (and
        // count towards the bound).
        let next_id = closed.last().map_or(1, |(id, _)| id + 1);
        Ok(Segments {
            dir: config.dir.clone(),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes,
            closed,
            current: None,
            next_id,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, size)| *size + bytes.len() as u64 > self.segment_bytes)
        {
            self.rotate()?;
        }
        if self.current.is_none() {
            self.begin()?;
        }
        let (id, file, size) = self.current.as_mut().expect("a segment was begun");
        file.write_all(bytes).with_context(|| {
            format!(
                "cannot write {}",
                self.dir.join(segment_name(*id)).display()
            )
        })?;
        *size += bytes.len() as u64;
        Ok(())
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        let id = self.next_id;
        let path = self.dir.join(segment_name(id));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut file = BufWriter::with_capacity(256 * 1024, file);
        file.write_all(SEGMENT_MAGIC)
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.next_id += 1;
        self.current = Some((id, file, SEGMENT_MAGIC.len() as u64));
        self.trim();
        Ok(())
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        if let Some((id, file, size)) = self.current.take() {
            finish(&self.dir, id, file)?;
            self.closed.push((id, size));
        }
        Ok(())
    }

    /// Deletes the oldest closed segments while the directory holds more than the bound
    /// (the segment being written counts at its full size).
    fn trim(&mut self) {
        let current = self.current.as_ref().map_or(0, |_| self.segment_bytes);
        while !self.closed.is_empty()
            && self.closed.iter().map(|(_, s)| s).sum::<u64>() + current > self.max_bytes
        {
            let (id, _) = self.closed.remove(0);
            let path = self.dir.join(segment_name(id));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("recording: cannot delete {}: {e}", path.display());
            }
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some((id, file, _)) = &mut self.current {
            file.flush().with_context(|| {
                format!(
                    "cannot write {}",
                    self.dir.join(segment_name(*id)).display()
                )
            })?;
        }
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.rotate()
    }
}

/// Flushes and syncs a segment being closed.
fn finish(dir: &Path, id: u64, file: BufWriter<File>) -> anyhow::Result<()> {
    let path = dir.join(segment_name(id));
    let file = file
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}
