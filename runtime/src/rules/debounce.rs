//! When a changed rule file is due to be read: per-file debounce, and whether a writer
//! still has the file open. Events in ([`Change`], from notify's event kinds), paths
//! out; no files are touched here (`reload.rs` reads them).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};

/// Longest a file may keep changing before it is loaded anyway.
const MAX_DEBOUNCE_WAIT: Duration = Duration::from_secs(2);
/// Longest a file may stay open for writing (written to, and no close-write seen) before
/// it is read anyway; it is still compiled only if it stops changing while it is read.
const MAX_OPEN_WAIT: Duration = Duration::from_secs(60);

/// What a file event says about a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Created or written to: a writer may still have it open.
    Writing,
    /// A writer closed it (inotify's `IN_CLOSE_WRITE`).
    Closed,
    /// Anything else: renamed into place, removed, attributes.
    Other,
}

impl Change {
    pub(crate) fn of(kind: &EventKind) -> Change {
        match kind {
            EventKind::Create(CreateKind::File) | EventKind::Modify(ModifyKind::Data(_)) => {
                Change::Writing
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Closed,
            _ => Change::Other,
        }
    }
}

/// Per-file debounce: a file is due once it has been quiet for `quiet`, or has kept
/// changing for [`MAX_DEBOUNCE_WAIT`]; but while it is open for writing (written to,
/// and its close-write not seen yet), only after [`MAX_OPEN_WAIT`].
pub(crate) struct Debouncer {
    quiet: Duration,
    pending: HashMap<PathBuf, Pending>,
}

#[derive(Clone, Copy)]
struct Pending {
    first: Instant,
    last: Instant,
    open_for_writing: bool,
}

impl Debouncer {
    pub(crate) fn new(quiet: Duration) -> Self {
        Debouncer {
            quiet,
            pending: HashMap::new(),
        }
    }

    pub(crate) fn touch(&mut self, path: PathBuf, now: Instant, change: Change) {
        let p = self.pending.entry(path).or_insert(Pending {
            first: now,
            last: now,
            open_for_writing: false,
        });
        p.last = now;
        match change {
            Change::Writing => p.open_for_writing = true,
            Change::Closed => p.open_for_writing = false,
            Change::Other => {}
        }
    }

    fn due_at(&self, p: &Pending) -> Instant {
        if p.open_for_writing {
            p.first + MAX_OPEN_WAIT
        } else {
            (p.last + self.quiet).min(p.first + MAX_DEBOUNCE_WAIT)
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| self.due_at(p)).min()
    }

    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, p)| self.due_at(p) <= now)
            .map(|(p, _)| p.clone())
            .collect();
        due.sort();
        for p in &due {
            self.pending.remove(p);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounce_waits_for_quiet() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(50));
        let p = PathBuf::from("/r/a.wasm");
        d.touch(p.clone(), t0, Change::Other);
        d.touch(p.clone(), t0 + ms(30), Change::Other);
        assert!(
            d.take_due(t0 + ms(60)).is_empty(),
            "30 ms after the last change"
        );
        assert_eq!(d.next_deadline(), Some(t0 + ms(80)));
        assert_eq!(d.take_due(t0 + ms(80)), vec![p.clone()]);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn debounce_gives_up_waiting_on_busy_files() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(50));
        let p = PathBuf::from("/r/a.wasm");
        for i in 0..100 {
            d.touch(p.clone(), t0 + ms(i * 30), Change::Other);
        }
        assert_eq!(d.next_deadline(), Some(t0 + MAX_DEBOUNCE_WAIT));
    }

    #[test]
    fn a_file_open_for_writing_waits_for_its_close() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(50));
        let p = PathBuf::from("/r/a.wasm");
        d.touch(p.clone(), t0, Change::Writing);
        assert!(d.take_due(t0 + ms(500)).is_empty(), "quiet but still open");
        assert!(
            d.take_due(t0 + ms(5000)).is_empty(),
            "past MAX_DEBOUNCE_WAIT, still open"
        );
        d.touch(p.clone(), t0 + ms(6000), Change::Closed);
        assert_eq!(
            d.take_due(t0 + ms(6000)),
            vec![p.clone()],
            "closed long after the first change"
        );

        d.touch(p.clone(), t0, Change::Writing);
        assert_eq!(d.next_deadline(), Some(t0 + MAX_OPEN_WAIT), "never closed");
    }

    #[test]
    fn events_say_whether_a_writer_has_the_file() {
        use notify::event::{DataChange, ModifyKind, RenameMode};
        assert_eq!(
            Change::of(&EventKind::Create(CreateKind::File)),
            Change::Writing
        );
        assert_eq!(
            Change::of(&EventKind::Modify(ModifyKind::Data(DataChange::Any))),
            Change::Writing
        );
        assert_eq!(
            Change::of(&EventKind::Access(AccessKind::Close(AccessMode::Write))),
            Change::Closed
        );
        assert_eq!(
            Change::of(&EventKind::Modify(ModifyKind::Name(RenameMode::To))),
            Change::Other
        );
        assert_eq!(
            Change::of(&EventKind::Access(AccessKind::Open(AccessMode::Any))),
            Change::Other
        );
    }
}
