//! The spill's `fdatasync` thread: appends stay page-cache fast on the writer's task,
//! and the disk catches up within [`SYNC_INTERVAL`]. It syncs the segment being
//! appended to at most once per interval while it changes, a closed segment at once, and
//! the directory after a segment is created. `log.rs` decides what to hand it.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest time appended data stays unsynced while the log changes.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

pub(super) enum SyncMsg {
    /// The segment now being appended to (a duplicate handle).
    Active(File),
    /// A segment no longer appended to: sync it now.
    Closed(File),
}

/// Moves `fdatasync` off the writer: appends stay page-cache fast, the disk catches up
/// within [`SYNC_INTERVAL`].
pub(super) struct Syncer {
    tx: Option<std::sync::mpsc::Sender<SyncMsg>>,
    dirty: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread; without one (it could not be spawned), closed segments are
    /// synced on the caller's thread.
    pub(super) fn start(dir: &Path) -> Syncer {
        let (tx, rx) = std::sync::mpsc::channel::<SyncMsg>();
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = dirty.clone();
        let dir = dir.to_owned();
        let thread = std::thread::Builder::new()
            .name("wasmrule-spill-sync".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                let mut active: Option<File> = None;
                let sync = |f: &File| {
                    if let Err(e) = f.sync_data() {
                        tracing::warn!("cannot sync the spill to disk: {e}");
                    }
                };
                loop {
                    match rx.recv_timeout(SYNC_INTERVAL) {
                        Ok(SyncMsg::Active(f)) => {
                            active = Some(f);
                            // The new file's name must survive a power failure too.
                            if let Ok(d) = File::open(&dir) {
                                sync(&d);
                            }
                        }
                        Ok(SyncMsg::Closed(f)) => {
                            sync(&f);
                            active = None;
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            if let Some(f) = &active {
                                sync(f);
                            }
                            return;
                        }
                    }
                    if flag.swap(false, Ordering::Relaxed)
                        && let Some(f) = &active
                    {
                        sync(f);
                    }
                }
            })
            .map_err(|e| {
                tracing::warn!("spill sync thread not started: {e}; syncing only as segments close")
            })
            .ok();
        Syncer {
            tx: thread.as_ref().map(|_| tx),
            dirty,
            thread,
        }
    }

    pub(super) fn send(&self, msg: SyncMsg) {
        match &self.tx {
            Some(tx) => {
                let _ = tx.send(msg);
            }
            None => {
                if let SyncMsg::Closed(f) = msg {
                    let _ = f.sync_data();
                }
            }
        }
    }

    /// Data was appended to the active segment.
    pub(super) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Syncs what is pending and ends the thread.
    pub(super) fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
