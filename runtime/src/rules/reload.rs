//! Keeps the served rules in step with the rules directory.
//!
//! watch (notify) -> debounce per file -> read + compile on a blocking thread -> check ->
//! swap into [`Rules`]. A new file is loaded, a changed file replaces its rule, a deleted
//! file unloads it. A file that does not load (not wasm, half-written, wrong ABI, bad
//! manifest) gets one error line naming the file and the reason, and whatever version
//! was serving keeps serving.
//!
//! Layout of the directory: `<dir>/<rule>.wasm` belongs to the default tenant,
//! `<dir>/<tenant>/<rule>.wasm` to `<tenant>`. Hidden files and other extensions are
//! ignored, so editors' temporary files and `cp x.wasm .x.tmp && mv` patterns work.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::metrics::Metrics;
use crate::rules::RulesConfig;
use crate::rules::engine::Engine;
use crate::rules::ruleset::{DEFAULT_TENANT, LoadedRule, Rules};
use crate::tenancy::Tenants;
use crate::tenancy::quarantine::RuleHealth;

/// Longest a file may keep changing before it is loaded anyway.
const MAX_DEBOUNCE_WAIT: Duration = Duration::from_secs(2);

/// Where a rule file sits in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulePath {
    pub id: String,
    pub tenant: String,
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
    let id = if tenant == DEFAULT_TENANT && parts.len() == 1 {
        stem.to_owned()
    } else {
        format!("{tenant}/{stem}")
    };
    Some(RulePath {
        id,
        tenant: tenant.to_owned(),
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
        }
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
        let loaded: Vec<PathBuf> = self
            .rules
            .snapshot()
            .iter()
            .map(|r| r.path.clone())
            .collect();
        files.extend(loaded);
        files.sort();
        files.dedup();
        for path in files {
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
                Ok(ev) => WatchSignal::Paths(ev.paths),
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
                    Some(WatchSignal::Paths(paths)) => {
                        let now = Instant::now();
                        for p in paths {
                            if classify(&self.config.dir, &p).is_some() {
                                debounce.touch(p, now);
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
                        self.sync(&path).await;
                    }
                }
            }
        }
        drop(watcher);
        Ok(())
    }

    /// Brings the rule for `path` in line with the file: load, replace, unload, or keep.
    pub async fn sync(&mut self, path: &Path) {
        let Some(rp) = classify(&self.config.dir, path) else {
            return;
        };
        let Some((bytes, hash)) = self.read_changed(path, &rp) else {
            return;
        };
        let engine = self.engine.clone();
        let started = Instant::now();
        let compiled = tokio::task::spawn_blocking(move || engine.compile(&bytes)).await;
        let current = self.rules.snapshot();
        let previous = current.get(&rp.id);
        let policy = self.tenants.policy(&rp.tenant);
        let checked = match compiled {
            // Topic ACL: every filter must be within what the tenant may subscribe to.
            Ok(Ok(rule)) => rule
                .manifest()
                .filters
                .iter()
                .try_for_each(|f| policy.check_filter(f))
                .map(|()| rule),
            Ok(Err(e)) => Err(e.to_string()),
            Err(join) => Err(format!("compilation panicked: {join}")),
        };
        let rule = match checked {
            Ok(rule) => rule,
            Err(e) => {
                return self.refuse(
                    path,
                    &rp,
                    previous.map(|p| (p.version().to_owned(), p.generation)),
                    e,
                );
            }
        };
        let slots = self.tenant_slots.len();
        let tenant_slot = *self.tenant_slots.entry(rp.tenant.clone()).or_insert(slots);
        let generation = self.generations.entry(rp.id.clone()).or_insert(0);
        *generation += 1;
        let meters = self.metrics.rules.meters(
            &rp.tenant,
            &rp.id,
            rule.manifest().version.as_deref().unwrap_or_default(),
        );
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
        });
        log_loaded(&loaded, previous.is_some(), started);
        self.rules.set_load_error(&rp.id, None);
        self.rules.swap(current.with(loaded));
        self.metrics.rules_loaded.fetch_add(1, Ordering::Relaxed);
    }

    /// The file's bytes and hash if they differ from what was last seen; a file that is
    /// gone unloads its rule.
    fn read_changed(&mut self, path: &Path, rp: &RulePath) -> Option<(Vec<u8>, u64)> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.seen.remove(path);
                self.rules.set_load_error(&rp.id, None);
                self.unload(&rp.id);
                return None;
            }
            Err(e) => {
                tracing::error!(file = %path.display(), "cannot read rule file: {e}");
                return None;
            }
        };
        let hash = content_hash(&bytes);
        if self.seen.get(path) == Some(&hash) {
            return None;
        }
        self.seen.insert(path.to_owned(), hash);
        Some((bytes, hash))
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
            "cannot load rule {}: {e}; {keeping}",
            path.display()
        );
        self.rules.set_load_error(&rp.id, Some(e));
    }

    fn unload(&mut self, id: &str) {
        let current = self.rules.snapshot();
        if let Some(old) = current.get(id) {
            tracing::info!(
                rule = %id,
                tenant = %old.tenant,
                version = old.version(),
                generation = old.generation,
                "unloaded rule {id} (file removed)"
            );
            self.rules.swap(current.without(id));
        }
    }
}

enum WatchSignal {
    Paths(Vec<PathBuf>),
    Rescan,
    Error(String),
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
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
        "{} rule {}",
        if replaced { "replaced" } else { "loaded" },
        loaded.id,
    );
}

/// Per-file debounce: a file is due once it has been quiet for `quiet`, or has kept
/// changing for [`MAX_DEBOUNCE_WAIT`].
struct Debouncer {
    quiet: Duration,
    // path -> (first change, last change)
    pending: HashMap<PathBuf, (Instant, Instant)>,
}

impl Debouncer {
    fn new(quiet: Duration) -> Self {
        Debouncer {
            quiet,
            pending: HashMap::new(),
        }
    }

    fn touch(&mut self, path: PathBuf, now: Instant) {
        self.pending
            .entry(path)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
    }

    fn due_at(&self, first: Instant, last: Instant) -> Instant {
        (last + self.quiet).min(first + MAX_DEBOUNCE_WAIT)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|&(first, last)| self.due_at(first, last))
            .min()
    }

    fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, (first, last))| self.due_at(*first, *last) <= now)
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
    fn debounce_waits_for_quiet() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(50));
        let p = PathBuf::from("/r/a.wasm");
        d.touch(p.clone(), t0);
        d.touch(p.clone(), t0 + ms(30));
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
            d.touch(p.clone(), t0 + ms(i * 30));
        }
        assert_eq!(d.next_deadline(), Some(t0 + MAX_DEBOUNCE_WAIT));
    }
}
