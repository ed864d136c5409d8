//! Keeps the served rules in step with the rules directory.
//!
//! watch (notify) -> debounce per file -> size check, read -> compile on a thread pool
//! of its own, under a time limit -> check -> swap into [`Rules`]. A new file is loaded, a
//! changed file replaces its rule, a deleted file unloads it. A file that does not load
//! (too big, not wasm, truncated, wrong ABI, bad manifest, too slow to compile) gets one
//! error line naming the file and the reason, and whatever version was serving keeps
//! serving.
//!
//! A file still being written is not compiled: one written in place (not renamed into
//! place) is due only once the writer closed it (inotify's close-write, `debounce.rs`),
//! is not read while Linux says a process has it open for writing (a read lease is
//! refused), and one whose size or modification time changed while it was read is read
//! again after the debounce instead.
//!
//! Layout of the directory: `<dir>/<rule>.wasm` belongs to the default tenant,
//! `<dir>/<tenant>/<rule>.wasm` to `<tenant>`. Hidden files and other extensions are
//! ignored, so editors' temporary files and `cp x.wasm .x.tmp && mv` patterns work.
//! `<rule>.canary.wasm` beside `<rule>.wasm` is that rule's canary (docs/canary.md): it
//! is loaded, replaced and unloaded the same way and with the same checks, and
//! published beside the live rule, never as a rule of its own. Renaming it over the
//! live file (`wasmrule promote`) is two changes the watcher sees, one per path: the
//! live rule replaced and the canary gone.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::EventKind;
use crate::ops::metrics::Metrics;
use crate::rules::RulesConfig;
use crate::rules::debounce::{Change, Debouncer};
use crate::rules::engine::{Engine, Rule};
use crate::rules::ruleset::{Canary, DEFAULT_TENANT, LoadedRule, Rules};
use crate::tenancy::Tenants;
use crate::tenancy::quarantine::RuleHealth;

/// Where a rule file sits in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulePath {
    /// The id of the rule (for a canary, of the rule it shadows).
    pub id: String,
    pub tenant: String,
    /// Whether the file is `<rule>.canary.wasm`.
    pub canary: bool,
}

/// A canary file's name ends with this before `.wasm`.
pub const CANARY_SUFFIX: &str = ".canary";

impl RulePath {
    /// What generations and load errors are kept under: the id, or `<id>.canary`, so
    /// that a rule and its canary do not share them.
    pub fn key(&self) -> String {
        if self.canary {
            format!("{}{CANARY_SUFFIX}", self.id)
        } else {
            self.id.clone()
        }
    }
}

/// Maps a path under `dir` to its rule identity, or `None` for files that are not
/// rules (wrong extension, hidden, too deep).
pub fn classify(dir: &Path, path: &Path) -> Option<RulePath> {
    let rel = path.strip_prefix(dir).ok()?;
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    let (tenant, file) = match parts.as_slice() {
        [file] => (DEFAULT_TENANT, *file),
        [tenant, file] if valid(tenant) => (*tenant, *file),
        _ => return None,
    };
    let stem = file.strip_suffix(".wasm")?;
    if !valid(stem) {
        return None;
    }
    let (stem, canary) = match stem.strip_suffix(CANARY_SUFFIX) {
        Some(live) if valid(live) => (live, true),
        Some(_) => return None,
        None => (stem, false),
    };
    let id = if tenant == DEFAULT_TENANT && parts.len() == 1 {
        stem.to_owned()
    } else {
        format!("{tenant}/{stem}")
    };
    Some(RulePath {
        id,
        tenant: tenant.to_owned(),
        canary,
    })
}

/// Loads, reloads and unloads rules as files change.
pub struct Reloader {
    engine: Engine,
    config: RulesConfig,
    rules: Arc<Rules>,
    metrics: Arc<Metrics>,
    tenants: Tenants,
    // Versions loaded so far per id, to number the next one.
    generations: HashMap<String, u64>,
    // Hash of the last content seen per path, loaded or not, so an unchanged file is
    // not compiled (or reported) twice.
    seen: HashMap<PathBuf, u64>,
    // Tenant -> slot (`LoadedRule::tenant_slot`), handed out in order of first load.
    tenant_slots: HashMap<String, usize>,
    // Which broker events the source produces: a rule naming one it never will is
    // refused.
    events: EventSource,
}

/// Where broker events (`$events/...`) come from, which decides the ones rules may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// The embedded broker: every kind.
    EmbeddedBroker,
    /// An external EMQX (`mqtt.emqx_events`): the kinds EMQX publishes on topics.
    Emqx,
    /// Any other MQTT broker: none.
    PlainBroker,
}

impl EventSource {
    /// Whether events of `kind` can ever arrive.
    pub fn produces(self, kind: EventKind) -> bool {
        match self {
            EventSource::EmbeddedBroker => true,
            EventSource::Emqx => !crate::source::mqtt::emqx::filters(kind).is_empty(),
            EventSource::PlainBroker => false,
        }
    }

    /// Refuses a rule that needs what this source is not (`needs` in its manifest).
    ///
    /// # Errors
    ///
    /// Naming the need, and what provides it.
    pub fn check_needs(self, needs: &[String]) -> Result<(), String> {
        for need in needs {
            match need.as_str() {
                "embedded-broker" if self == EventSource::EmbeddedBroker => {}
                "embedded-broker" => {
                    return Err("the rule needs the embedded broker (its manifest says \
                         needs: [\"embedded-broker\"]: it subscribes, unsubscribes or \
                         delivers to clients); run wasmrule with --embedded-broker"
                        .to_owned());
                }
                other => {
                    return Err(format!(
                        "the rule needs {other:?}, which this wasmrule does not provide \
                         (known: \"embedded-broker\")"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuses a rule filter that names one event kind (no wildcard) this source never
    /// produces: such a rule would load and never run, or, as a part of a rule pack
    /// that needs the embedded broker, half work. `$events/#` loads and gets what
    /// there is.
    ///
    /// # Errors
    ///
    /// Naming the filter, why, and what would produce it.
    pub fn check_filter(self, filter: &str) -> Result<(), String> {
        let Some(kind) = EventKind::from_topic(filter) else {
            return Ok(());
        };
        if self.produces(kind) {
            return Ok(());
        }
        Err(match self {
            EventSource::Emqx => format!(
                "filter {filter:?}: EMQX publishes no {} events on a topic (docs/events.md), \
                 so with mqtt.emqx_events the rule would never run; only the embedded broker \
                 (--embedded-broker) produces them",
                kind.name()
            ),
            _ => format!(
                "filter {filter:?}: {} events come only from the embedded broker \
                 (--embedded-broker) or, for some kinds, an EMQX (mqtt.emqx_events); this \
                 wasmrule reads a plain MQTT broker, so the rule would never run",
                kind.name()
            ),
        })
    }
}

impl Reloader {
    /// A reloader for `config.dir`, publishing into `rules`.
    pub fn new(
        engine: Engine,
        config: RulesConfig,
        tenants: Tenants,
        rules: Arc<Rules>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Reloader {
            engine,
            config,
            rules,
            metrics,
            tenants,
            generations: HashMap::new(),
            seen: HashMap::new(),
            tenant_slots: HashMap::new(),
            events: EventSource::EmbeddedBroker,
        }
    }

    /// Refuses rules that name broker events `events` never produces (by default,
    /// every kind is accepted).
    pub fn with_event_source(mut self, events: EventSource) -> Self {
        self.events = events;
        self
    }

    /// Loads every rule file in the directory (and in tenant subdirectories).
    ///
    /// # Errors
    ///
    /// When the directory cannot be read. Bad rule files are logged, not returned.
    pub async fn scan(&mut self) -> anyhow::Result<()> {
        let dir = self.config.dir.clone();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read rules directory {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                if let Ok(sub) = std::fs::read_dir(&path) {
                    files.extend(sub.filter_map(|e| e.ok().map(|e| e.path())));
                }
            } else {
                files.push(path);
            }
        }
        // Files that vanished while nothing was watching (a rescan after overflow).
        let set = self.rules.snapshot();
        let loaded: Vec<PathBuf> = set
            .iter()
            .chain(set.canaries())
            .map(|r| r.path.clone())
            .collect();
        files.extend(loaded);
        files.sort();
        files.dedup();
        // Canaries after the rules, so that one whose rule is there is never reported
        // idle for the moment between the two loads.
        let dir = &self.config.dir;
        files.sort_by_key(|p| classify(dir, p).is_some_and(|rp| rp.canary));
        for path in files {
            // A file still being written is left to the watcher: its close-write, or
            // its next change, brings it back.
            self.sync(&path).await;
        }
        Ok(())
    }

    /// Watches the directory until `shutdown`, applying changes.
    ///
    /// # Errors
    ///
    /// When the directory cannot be watched.
    pub async fn watch(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::channel::<WatchSignal>(1024);
        let overflow_tx = tx.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let signal = match res {
                Ok(ev) => WatchSignal::Paths(Change::of(&ev.kind), ev.paths),
                Err(e) => WatchSignal::Error(e.to_string()),
            };
            // A full queue means we fell behind: ask for a full rescan instead.
            if tx.try_send(signal).is_err() {
                let _ = overflow_tx.try_send(WatchSignal::Rescan);
            }
        })
        .context("cannot start the file watcher")?;
        watcher
            .watch(&self.config.dir, notify::RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", self.config.dir.display()))?;
        tracing::info!(dir = %self.config.dir.display(), "watching rules directory");
        // Files that changed between the first scan and the watch starting.
        if let Err(e) = self.scan().await {
            tracing::error!("{e:#}");
        }

        let mut debounce = Debouncer::new(self.config.debounce);
        loop {
            let deadline = debounce.next_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                signal = rx.recv() => match signal {
                    None => break,
                    Some(WatchSignal::Paths(change, paths)) => {
                        let now = Instant::now();
                        for p in paths {
                            if classify(&self.config.dir, &p).is_some() {
                                debounce.touch(p, now, change);
                            }
                        }
                    }
                    Some(WatchSignal::Rescan) => {
                        tracing::warn!("file events overflowed; rescanning the rules directory");
                        if let Err(e) = self.scan().await {
                            tracing::error!("{e:#}");
                        }
                    }
                    Some(WatchSignal::Error(e)) => tracing::warn!("file watcher: {e}"),
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    for path in debounce.take_due(Instant::now()) {
                        if self.sync(&path).await == Synced::StillWriting {
                            debounce.touch(path, Instant::now(), Change::Other);
                        }
                    }
                }
            }
        }
        drop(watcher);
        Ok(())
    }

    /// Brings the rule for `path` in line with the file: load, replace, unload, or keep;
    /// or, if the file changed while it was read, nothing yet.
    pub async fn sync(&mut self, path: &Path) -> Synced {
        let Some(rp) = classify(&self.config.dir, path) else {
            return Synced::Done;
        };
        let current = self.rules.snapshot();
        let previous = if rp.canary {
            current.canary(&rp.id)
        } else {
            current.get(&rp.id)
        };
        let serving = previous.map(|p| (p.version().to_owned(), p.generation));
        let (bytes, hash) = match self.read_changed(path, &rp) {
            FileState::Unchanged => return Synced::Done,
            FileState::StillWriting => return Synced::StillWriting,
            FileState::Refused(e) => {
                self.refuse(path, &rp, serving, e);
                return Synced::Done;
            }
            FileState::Changed(bytes, hash) => (bytes, hash),
        };
        let started = Instant::now();
        let compiled = self.compile(bytes).await;
        let policy = self.tenants.policy(&rp.tenant);
        // Topic ACL: every filter must be within what the tenant may subscribe to.
        let checked = compiled.and_then(|rule| {
            rule.manifest()
                .filters
                .iter()
                .try_for_each(|f| {
                    policy.check_filter(f)?;
                    self.events.check_filter(f)
                })
                .and_then(|()| self.events.check_needs(&rule.manifest().needs))
                .map(|()| rule)
        });
        let rule = match checked {
            Ok(rule) => rule,
            Err(e) => {
                self.refuse(path, &rp, serving, e);
                return Synced::Done;
            }
        };
        let slots = self.tenant_slots.len();
        let tenant_slot = *self.tenant_slots.entry(rp.tenant.clone()).or_insert(slots);
        let generation = self.generations.entry(rp.key()).or_insert(0);
        *generation += 1;
        let version = rule.manifest().version.as_deref().unwrap_or_default();
        let version_shared: Arc<str> = version.into();
        // A canary's own series (its time, mostly) are under `<id>.canary`, so that
        // they never add to the live version's.
        let meters = self.metrics.rules.meters(&rp.tenant, &rp.key(), version);
        let canary = rp.canary.then(|| {
            let name = rp.id.rsplit('/').next().unwrap_or(&rp.id);
            Box::new(Canary {
                meters: self.metrics.canaries.meters(
                    &rp.tenant,
                    &rp.id,
                    version,
                    self.config.canary_samples_per_second,
                ),
                stream_key: [&policy.key_prefix[..], b"wasmrule:canary:", name.as_bytes()].concat(),
                stream_maxlen: self.config.canary_stream_maxlen.to_string(),
            })
        });
        let loaded = Arc::new(LoadedRule {
            id: rp.id.as_str().into(),
            tenant: rp.tenant.as_str().into(),
            tenant_slot,
            path: path.to_owned(),
            generation: *generation,
            hash,
            rule,
            policy,
            health: RuleHealth::new(),
            meters,
            canary,
            version_shared,
        });
        log_loaded(&loaded, previous.is_some(), started);
        self.rules.set_load_error(&rp.key(), None);
        if rp.canary {
            if current.get(&rp.id).is_none() {
                tracing::warn!(
                    rule = %rp.id,
                    file = %path.display(),
                    "canary of {} is loaded but idle: no rule {} is serving",
                    rp.id,
                    rp.id
                );
            }
            self.rules.swap(current.with_canary(loaded));
        } else {
            self.rules.swap(current.with(loaded));
        }
        self.metrics.rules_loaded.fetch_add(1, Ordering::Relaxed);
        Synced::Done
    }

    /// Compiles on a thread pool of its own, at a lower priority than the workers, and
    /// waits at most `rules.compile_timeout_ms`. wasmtime compiles a module's functions
    /// in parallel on the rayon pool of the calling thread; each compilation gets a new
    /// pool (as many threads as cores, nice 10), so it uses every idle core, the workers
    /// win the cores from it when they need them, and a slow one holds only its own
    /// pool: the next load does not queue behind the functions it has left. wasmtime
    /// cannot interrupt a compilation, so one that takes longer than the limit is
    /// refused and left to finish on its pool, its result dropped; nothing waits for it.
    async fn compile(&self, bytes: Vec<u8>) -> Result<Rule, String> {
        let engine = self.engine.clone();
        let limit = self.config.compile_timeout;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("wasmrule-compile-{i}"))
            .start_handler(|_| lower_priority())
            // Without a handler rayon aborts the process on a panic; with it, the
            // sender is dropped and the load is refused ("compilation panicked").
            .panic_handler(|_| ())
            .build()
            .map_err(|e| format!("cannot start threads to compile it: {e}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // `spawn` keeps the pool's threads until the job is done, though `pool` is
        // dropped at the end of this function.
        pool.spawn(move || {
            // The receiver is gone only if the compilation took too long.
            let _ = tx.send(engine.compile(&bytes));
        });
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(compiled)) => compiled.map_err(|e| e.to_string()),
            Ok(Err(_)) => Err("compilation panicked".to_owned()),
            Err(_) => Err(format!(
                "compiling it took longer than {} ms (rules.compile_timeout_ms); refused",
                limit.as_millis()
            )),
        }
    }

    /// What the file holds now, against what was last seen. A file that is gone unloads
    /// its rule; one over `rules.max_file_bytes` is refused unread; one that changed
    /// while it was read is still being written.
    fn read_changed(&mut self, path: &Path, rp: &RulePath) -> FileState {
        let gone = |this: &mut Self| {
            this.seen.remove(path);
            this.rules.set_load_error(&rp.key(), None);
            this.unload(rp);
            FileState::Unchanged
        };
        let cannot_read = |e: std::io::Error| {
            tracing::error!(file = %path.display(), "cannot read rule file: {e}");
            FileState::Unchanged
        };
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return gone(self),
            Err(e) => return cannot_read(e),
        };
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => return cannot_read(e),
        };
        let max = self.config.max_file_bytes;
        if before.len() > max {
            // Remembered by size and time, so that the same file is reported once.
            let stamp = stamp_hash(&before);
            if self.seen.insert(path.to_owned(), stamp) == Some(stamp) {
                return FileState::Unchanged;
            }
            return FileState::Refused(format!(
                "the file is {} bytes, above the limit of {max} bytes (rules.max_file_bytes); \
                 not read",
                before.len()
            ));
        }
        // The watcher's close-write may still be on its way: ask the system too.
        if has_writer(&file) == Some(true) {
            tracing::debug!(file = %path.display(), "rule file open for writing; waiting");
            return FileState::StillWriting;
        }
        let mut bytes = Vec::with_capacity(before.len() as usize);
        if let Err(e) = std::io::Read::read_to_end(&mut file, &mut bytes) {
            return cannot_read(e);
        }
        let steady = std::fs::metadata(path).is_ok_and(|after| {
            stamp_hash(&after) == stamp_hash(&before) && after.len() == bytes.len() as u64
        });
        if !steady {
            tracing::debug!(file = %path.display(), "rule file changed while read; waiting");
            return FileState::StillWriting;
        }
        let hash = content_hash(&bytes);
        if self.seen.get(path) == Some(&hash) {
            return FileState::Unchanged;
        }
        self.seen.insert(path.to_owned(), hash);
        FileState::Changed(bytes, hash)
    }

    /// A file that does not load: counted, logged, kept as the rule's load error; the
    /// version serving (if any) goes on serving.
    fn refuse(&mut self, path: &Path, rp: &RulePath, serving: Option<(String, u64)>, e: String) {
        self.metrics.load_errors.fetch_add(1, Ordering::Relaxed);
        let keeping = match serving {
            Some((v, g)) if v.is_empty() => format!("generation {g} keeps serving"),
            Some((v, g)) => format!("version {v:?} (generation {g}) keeps serving"),
            None => "rule not loaded".to_owned(),
        };
        tracing::error!(
            file = %path.display(),
            tenant = %rp.tenant,
            "cannot load {} {}: {e}; {keeping}",
            if rp.canary { "canary" } else { "rule" },
            path.display()
        );
        self.rules.set_load_error(&rp.key(), Some(e));
    }

    fn unload(&mut self, rp: &RulePath) {
        let id = rp.id.as_str();
        let current = self.rules.snapshot();
        let old = if rp.canary {
            current.canary(id)
        } else {
            current.get(id)
        };
        let Some(old) = old else {
            return;
        };
        tracing::info!(
            rule = %id,
            tenant = %old.tenant,
            version = old.version(),
            generation = old.generation,
            "unloaded {} {id} ({})",
            if rp.canary { "canary of" } else { "rule" },
            if rp.canary { "file removed or promoted" } else { "file removed" }
        );
        let rest = if rp.canary {
            current.without_canary(id)
        } else {
            current.without(id)
        };
        self.rules.swap(rest);
    }
}

/// What [`Reloader::sync`] did with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Loaded, replaced, unloaded, refused, or unchanged.
    Done,
    /// It changed while it was read: try again once it is quiet.
    StillWriting,
}

/// A rule file as [`Reloader::read_changed`] found it.
enum FileState {
    Unchanged,
    StillWriting,
    Refused(String),
    Changed(Vec<u8>, u64),
}

enum WatchSignal {
    Paths(Change, Vec<PathBuf>),
    Rescan,
    Error(String),
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Whether some process has `file` open for writing, where the system can tell: Linux
/// refuses a read lease on such a file (`fcntl(F_SETLEASE, F_RDLCK)` fails with
/// `EAGAIN`). `None` where it cannot (another OS, a file wasmrule does not own without
/// `CAP_LEASE`, leases turned off); then the events and the size and time checks decide.
fn has_writer(file: &std::fs::File) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor `file` owns and keeps open for the call; the
        // lease, if granted, is released at once, so no writer ever waits on it.
        let taken = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
        if taken == 0 {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
            return Some(false);
        }
        let refused = std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        refused.then_some(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

/// Makes the calling thread (one of a compilation's) yield to the workers when the cores are contended: nice 10 on Linux, nothing elsewhere.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; a failure only leaves
    // the priority as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// A file's size and modification time, hashed.
fn stamp_hash(m: &std::fs::Metadata) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (m.len(), m.modified().ok()).hash(&mut h);
    h.finish()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The line that says a rule serves.
fn log_loaded(loaded: &LoadedRule, replaced: bool, started: Instant) {
    let m = loaded.rule.manifest();
    tracing::info!(
        rule = %loaded.id,
        tenant = %loaded.tenant,
        name = %m.name,
        version = loaded.version(),
        generation = loaded.generation,
        filters = ?m.filters,
        kind = loaded.rule.kind_name(),
        cached = loaded.rule.from_cache(),
        compile_ms = started.elapsed().as_millis() as u64,
        "{} {} {}",
        if replaced { "replaced" } else { "loaded" },
        if loaded.canary.is_some() { "canary of" } else { "rule" },
        loaded.id,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_rule_paths() {
        let d = Path::new("/r");
        let c = |p: &str| classify(d, Path::new(p)).map(|r| (r.id, r.tenant));
        assert_eq!(c("/r/a.wasm"), Some(("a".into(), "default".into())));
        assert_eq!(c("/r/acme/a.wasm"), Some(("acme/a".into(), "acme".into())));
        assert_eq!(c("/r/a.wat"), None);
        assert_eq!(c("/r/.a.wasm"), None);
        assert_eq!(c("/r/.acme/a.wasm"), None);
        assert_eq!(c("/r/a/b/c.wasm"), None);
        assert_eq!(c("/r/a b.wasm"), None);
        assert_eq!(c("/elsewhere/a.wasm"), None);
    }

    #[test]
    fn classifies_canaries_as_their_rule() {
        let d = Path::new("/r");
        let c = |p: &str| classify(d, Path::new(p)).map(|r| (r.id, r.tenant, r.canary));
        assert_eq!(
            c("/r/a.canary.wasm"),
            Some(("a".into(), "default".into(), true))
        );
        assert_eq!(
            c("/r/acme/a.canary.wasm"),
            Some(("acme/a".into(), "acme".into(), true))
        );
        assert_eq!(c("/r/a.wasm").map(|r| r.2), Some(false));
        assert_eq!(c("/r/.canary.wasm"), None);
        let rp = classify(d, Path::new("/r/a.canary.wasm")).unwrap();
        assert_eq!(rp.key(), "a.canary");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_open_for_writing_has_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.wasm");
        let writer = std::fs::File::create(&path).unwrap();
        let reader = std::fs::File::open(&path).unwrap();
        assert_eq!(has_writer(&reader), Some(true));
        drop(writer);
        assert_eq!(has_writer(&reader), Some(false));
    }
}
