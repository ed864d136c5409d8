//! `wasmrule replay`: recorded events through a directory of rules, with no broker and
//! no sleeping, comparing what each rule returns with what was recorded
//! (docs/replay.md). With `--dry-run` nothing is written and reads are answered from
//! the recording; with a Redis URL the rules' commands are written to it (namespaced by
//! their tenants' policies, as `wasmrule run` writes them) and reads go to it, so a
//! replay into an empty Redis rebuilds the state the rules would have left.
//!
//! Rules are matched to recorded events by topic, as `wasmrule run` matches them, and
//! compared with the recorded invocation of the rule with the same id. Owns the replay
//! loop and its report; not the recording's format (`record/`) or the policy
//! (`tenancy/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::actions::MqttAction;
use crate::commands::Commands;
use crate::config::{Config, Overrides};
use crate::ops::metrics::Metrics;
use crate::record::diff::{Change, compare};
use crate::record::format::{EventRecord, Invocation, Record};
use crate::record::reader::{Damage, read_all, segments};
use crate::record::reads::RecordedReads;
use crate::record::{Output, ReadEntry};
use crate::rules::engine::{Engine, ReadCode, RedisReads, Reply, RuleError};
use crate::rules::reload::classify;
use crate::rules::ruleset::{LoadedRule, RuleSet};
use crate::sink::redis::{cmd_of, reply_of};
use crate::tenancy::policy::TenantPolicy;
use crate::tenancy::quarantine::RuleHealth;

/// Commands sent to Redis in one pipeline.
const PIPELINE: usize = 512;

/// What a replay does.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Recording directories or segment files, read in the order given.
    pub files: Vec<PathBuf>,
    /// The rules to replay through (laid out as `wasmrule run`'s rules directory).
    pub rules_dir: PathBuf,
    /// The config file whose tenants (namespaces, limits, command sets) apply.
    pub config: Option<PathBuf>,
    /// `None`: a dry run. `Some(url)`: write to, and read from, this Redis.
    pub redis_url: Option<String>,
    /// Only events received at or after this time (ms since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Only events received before this time.
    pub to_ms: Option<u64>,
    /// Examples kept per rule.
    pub examples: usize,
}

/// One event where a rule's output differs from the recording.
#[derive(Debug, Clone)]
pub struct Example {
    pub topic: String,
    pub time_ms: u64,
    pub changes: Vec<Change>,
}

/// What replay found for one rule.
#[derive(Debug, Clone, Default)]
pub struct RuleReport {
    /// The replayed version (its manifest's).
    pub version: String,
    /// The versions the recording has for this rule id.
    pub recorded_versions: BTreeSet<String>,
    /// Events run through it.
    pub invocations: u64,
    /// Of those, events with a recorded invocation of this rule to compare with.
    pub compared: u64,
    /// Of those, events whose output differs.
    pub differing: u64,
    /// Changes by command name (`HSET`, `MQTT PUBLISH`, `ERROR`).
    pub changes: BTreeMap<String, u64>,
    /// Failures of the replayed rule by kind (`trap`, `timeout`, `command_not_allowed`).
    pub failures: BTreeMap<String, u64>,
    /// Reads the recording could not answer (a dry run only).
    pub reads_missed: u64,
    /// Events whose recorded invocation did not run (`quarantined`, `cpu_budget`):
    /// neither run again nor compared.
    pub not_run_when_recorded: u64,
    pub examples: Vec<Example>,
}

/// The result of a replay.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub segments: usize,
    /// Events in the time range.
    pub events: u64,
    /// Events outside `--from`/`--to`.
    pub skipped: u64,
    /// Events the recorder lost while recording (gap records in range).
    pub lost: u64,
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    pub damage: Vec<Damage>,
    pub rules: BTreeMap<String, RuleReport>,
    /// Recorded invocations of rules that are not in `--rules`.
    pub not_replayed: BTreeMap<String, u64>,
    /// Commands written to Redis (with a Redis URL).
    pub written: u64,
    /// Commands Redis refused (with a Redis URL).
    pub refused: u64,
    /// MQTT actions the rules returned; replay takes none.
    pub actions_not_taken: u64,
    pub dry_run: bool,
}

impl Report {
    /// Whether any replayed rule's output differs from the recording.
    pub fn differs(&self) -> bool {
        self.rules.values().any(|r| r.differing > 0)
    }

    /// The report as JSON (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        let rules: serde_json::Map<String, serde_json::Value> = self
            .rules
            .iter()
            .map(|(id, r)| {
                let examples: Vec<serde_json::Value> = r
                    .examples
                    .iter()
                    .map(|e| {
                        json!({
                            "topic": e.topic,
                            "time_ms": e.time_ms,
                            "changes": e.changes.iter().map(|c| json!({
                                "command": c.name, "recorded": c.before, "replayed": c.after,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let v = json!({
                    "version": r.version,
                    "recorded_versions": r.recorded_versions,
                    "invocations": r.invocations,
                    "not_run_when_recorded": r.not_run_when_recorded,
                    "compared": r.compared,
                    "differing": r.differing,
                    "changes": r.changes,
                    "failures": r.failures,
                    "reads_missed": r.reads_missed,
                    "examples": examples,
                });
                (id.clone(), v)
            })
            .collect();
        json!({
            "dry_run": self.dry_run,
            "segments": self.segments,
            "events": self.events,
            "skipped": self.skipped,
            "lost_when_recorded": self.lost,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "damage": self.damage.iter().map(|d| json!({
                "segment": d.segment.display().to_string(), "offset": d.offset, "reason": d.reason,
            })).collect::<Vec<_>>(),
            "rules": rules,
            "not_replayed": self.not_replayed,
            "written": self.written,
            "refused": self.refused,
            "actions_not_taken": self.actions_not_taken,
            "differs": self.differs(),
        })
    }

    /// The report for a terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let span = match (self.first_ms, self.last_ms) {
            (Some(a), Some(b)) => format!(" from {} to {}", rfc3339(a), rfc3339(b)),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "replayed {} events{span} from {} segment(s){}",
            self.events,
            self.segments,
            if self.dry_run {
                " (dry run: nothing written, reads answered from the recording)"
            } else {
                ""
            }
        );
        if self.skipped > 0 {
            let _ = writeln!(
                s,
                "  {} events outside --from/--to not replayed",
                self.skipped
            );
        }
        if self.lost > 0 {
            let _ = writeln!(
                s,
                "  warning: the recorder lost {} events while recording (gaps)",
                self.lost
            );
        }
        for d in &self.damage {
            let _ = writeln!(
                s,
                "  warning: {} damaged at byte {} ({}); the rest of that segment was skipped",
                d.segment.display(),
                d.offset,
                d.reason
            );
        }
        for (id, r) in &self.rules {
            let recorded: Vec<&str> = r.recorded_versions.iter().map(String::as_str).collect();
            let versions = match recorded.as_slice() {
                [] => format!("version {:?}, not in the recording", r.version),
                [v] if *v == r.version => format!("version {v:?}"),
                _ => format!("version {:?}, recorded {}", r.version, recorded.join(", ")),
            };
            let _ = writeln!(
                s,
                "\nrule {id} ({versions}): {} events, {} compared, {} differ",
                r.invocations, r.compared, r.differing
            );
            for (name, n) in &r.changes {
                let _ = writeln!(s, "  {name}: {n} changed");
            }
            if r.not_run_when_recorded > 0 {
                let _ = writeln!(
                    s,
                    "  not run when recorded (quarantined or over the CPU share), not replayed: {}",
                    r.not_run_when_recorded
                );
            }
            for (kind, n) in &r.failures {
                let _ = writeln!(s, "  failed ({kind}): {n}");
            }
            if r.reads_missed > 0 {
                let _ = writeln!(
                    s,
                    "  {} reads were not in the recording (answered `unavailable`; \
                     replay with --redis-url to read a live Redis)",
                    r.reads_missed
                );
            }
            for e in &r.examples {
                let _ = writeln!(s, "  e.g. {} at {}:", e.topic, rfc3339(e.time_ms));
                for c in &e.changes {
                    let _ = writeln!(s, "    - {}", c.before.as_deref().unwrap_or("(nothing)"));
                    let _ = writeln!(s, "    + {}", c.after.as_deref().unwrap_or("(nothing)"));
                }
            }
        }
        for (id, n) in &self.not_replayed {
            let _ = writeln!(
                s,
                "\nrecorded rule {id} is not in the rules directory: {n} invocations not replayed"
            );
        }
        if !self.dry_run {
            let _ = writeln!(
                s,
                "\nwrote {} commands, {} refused by Redis",
                self.written, self.refused
            );
        }
        if self.actions_not_taken > 0 {
            let _ = writeln!(
                s,
                "{} MQTT actions compared, not taken (replay publishes nothing)",
                self.actions_not_taken
            );
        }
        let differing: u64 = self.rules.values().map(|r| r.differing).sum();
        let compared: u64 = self.rules.values().map(|r| r.compared).sum();
        let _ = writeln!(
            s,
            "\n{}",
            if differing == 0 {
                format!("no differences in {compared} compared invocations")
            } else {
                format!("{differing} of {compared} compared invocations differ")
            }
        );
        s
    }
}

/// Runs the replay.
///
/// # Errors
///
/// When the config, the rules or the recording cannot be read, a rule does not load,
/// or Redis cannot be reached.
pub fn replay(engine: &Engine, opts: &ReplayOptions) -> anyhow::Result<Report> {
    let config = Config::load(opts.config.as_deref(), &Overrides::default())?;
    let set = load_rules(engine, &config, &opts.rules_dir)?;
    let mut redis = match &opts.redis_url {
        Some(url) => Some(LiveRedis::connect(url)?),
        None => None,
    };
    let files = segments(&opts.files)?;
    let mut report = Report {
        segments: files.len(),
        dry_run: redis.is_none(),
        ..Report::default()
    };
    for r in set.iter() {
        report.rules.insert(
            r.id.to_string(),
            RuleReport {
                version: r.version().to_owned(),
                ..RuleReport::default()
            },
        );
    }
    let mut matched = Vec::new();
    let mut ctx = Run::default();
    let in_range =
        |t: u64| opts.from_ms.is_none_or(|f| t >= f) && opts.to_ms.is_none_or(|to| t < to);
    report.damage = read_all(&files, |record| {
        match record {
            Record::Gap { time_ms, lost } => {
                if in_range(time_ms) {
                    report.lost += lost;
                }
            }
            Record::Event(ev) if !in_range(ev.time_ms) => report.skipped += 1,
            Record::Event(ev) => {
                report.events += 1;
                report.first_ms.get_or_insert(ev.time_ms);
                report.last_ms = Some(ev.time_ms);
                set.matching(&ev.topic, &mut matched);
                for &i in &matched {
                    run_one(
                        set.at(i),
                        &ev,
                        &mut ctx,
                        &mut redis,
                        opts.examples,
                        &mut report,
                    )?;
                }
                for inv in &ev.invocations {
                    if set.get(&inv.rule).is_none() {
                        *report.not_replayed.entry(inv.rule.clone()).or_default() += 1;
                    } else if let Some(r) = report.rules.get_mut(&inv.rule)
                        && !r.recorded_versions.contains(&inv.version)
                    {
                        r.recorded_versions.insert(inv.version.clone());
                    }
                }
            }
        }
        Ok(())
    })?;
    if let Some(redis) = &mut redis {
        redis.flush()?;
        report.written = redis.written;
        report.refused = redis.refused;
    }
    Ok(report)
}

/// Failure kinds that say a rule was not run at all when recorded.
const NOT_RUN: [&str; 2] = ["quarantined", crate::tenancy::cpu_budget::OverBudget::KIND];

/// Scratch space reused across invocations.
#[derive(Default)]
struct Run {
    commands: Commands,
    actions: Vec<MqttAction>,
    namespaced: Commands,
}

fn run_one(
    loaded: &LoadedRule,
    ev: &EventRecord,
    ctx: &mut Run,
    redis: &mut Option<LiveRedis>,
    examples: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let recorded: Option<&Invocation> = ev.invocations.iter().find(|i| *i.rule == *loaded.id);
    // An invocation recorded as not run (the rule was quarantined, or its tenant over
    // its CPU share) is not run again: replay reproduces what happened, so a rebuild
    // writes what the live run wrote, and a dry run does not count the live run's
    // shedding as a change of the rule.
    if let Some(rec) = recorded
        && rec
            .output
            .error
            .as_deref()
            .is_some_and(|k| NOT_RUN.contains(&k))
    {
        let rep = report
            .rules
            .get_mut(&*loaded.id)
            .expect("every replayed rule has a report");
        rep.not_run_when_recorded += 1;
        return Ok(());
    }
    let reads: &[ReadEntry] = recorded.map_or(&[], |i| &i.reads);
    let (output, missed) = invoke(loaded, &ev.event, reads, ctx, redis)?;
    let rep = report
        .rules
        .get_mut(&*loaded.id)
        .expect("every replayed rule has a report");
    rep.invocations += 1;
    rep.reads_missed += u64::from(missed);
    if let Some(kind) = &output.error {
        *rep.failures.entry(kind.clone()).or_default() += 1;
    }
    report.actions_not_taken += output.actions.len() as u64;
    if let Some(rec) = recorded {
        rep.compared += 1;
        let changes = compare(&rec.output, &output);
        if !changes.is_empty() {
            rep.differing += 1;
            for c in &changes {
                *rep.changes.entry(c.name.clone()).or_default() += 1;
            }
            if rep.examples.len() < examples {
                rep.examples.push(Example {
                    topic: ev.topic.clone(),
                    time_ms: ev.time_ms,
                    changes,
                });
            }
        }
    }
    if output.error.is_none()
        && let Some(redis) = redis
    {
        ctx.namespaced.clear();
        // Checked already in `invoke`: this only namespaces.
        let _ = loaded.policy.apply(&output.commands, &mut ctx.namespaced);
        redis.queue(&ctx.namespaced)?;
    }
    // The output's buffers, for the next invocation.
    (ctx.commands, ctx.actions) = (output.commands, output.actions);
    Ok(())
}

/// Runs `loaded` on `event` as a worker would: the invocation (run again if the host
/// starved it), then the tenant's checks of its output.
fn invoke(
    loaded: &LoadedRule,
    event: &[u8],
    recorded_reads: &[ReadEntry],
    ctx: &mut Run,
    redis: &mut Option<LiveRedis>,
) -> anyhow::Result<(Output, u32)> {
    let policy = &loaded.policy;
    let mut missed = 0;
    let result = loop {
        ctx.commands.clear();
        ctx.actions.clear();
        let r = if loaded.rule.abi() >= 2 {
            let port: Box<dyn RedisReads> = match redis.take() {
                Some(live) => Box::new(LivePort {
                    redis: live,
                    policy: policy.clone(),
                }),
                None => Box::new(DryReads {
                    policy: policy.clone(),
                    recorded: RecordedReads::new(recorded_reads.to_vec(), None),
                }),
            };
            let mut port = Some(port);
            let r = loaded.rule.invoke_actions(
                event,
                &mut ctx.commands,
                &mut ctx.actions,
                &policy.limits,
                &mut port,
            );
            let port: Box<dyn std::any::Any> = port.expect("the engine gives the port back");
            match port.downcast::<LivePort>() {
                Ok(live) => *redis = Some(live.redis),
                Err(other) => {
                    if let Ok(dry) = other.downcast::<DryReads>() {
                        missed = dry.recorded.missed;
                    }
                }
            }
            r
        } else {
            loaded
                .rule
                .invoke_with(event, &mut ctx.commands, &policy.limits)
        };
        match r {
            Err(RuleError::Stalled { .. }) => continue,
            r => break r,
        }
    };
    let error = match result {
        Err(e) => Some(e.kind().to_owned()),
        Ok(_) => {
            ctx.namespaced.clear();
            policy
                .check_actions(&ctx.actions)
                .and_then(|()| policy.apply(&ctx.commands, &mut ctx.namespaced))
                .err()
                .map(|e| e.kind().to_owned())
        }
    };
    let output = match error {
        Some(kind) => Output {
            error: Some(kind),
            ..Output::default()
        },
        None => Output {
            commands: std::mem::take(&mut ctx.commands),
            actions: std::mem::take(&mut ctx.actions),
            error: None,
        },
    };
    Ok((output, missed))
}

/// The rules of `dir` (laid out as `wasmrule run`'s; canaries are not replayed), each
/// under its tenant's policy, refused as `wasmrule run` would refuse them.
fn load_rules(engine: &Engine, config: &Config, dir: &Path) -> anyhow::Result<RuleSet> {
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("rules directory {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read rules directory {}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            for e in std::fs::read_dir(&path)? {
                files.push(e?.path());
            }
        } else {
            files.push(path);
        }
    }
    files.sort();
    let metrics = Metrics::default();
    let mut set = RuleSet::default();
    let mut slots: BTreeMap<String, usize> = BTreeMap::new();
    for path in files {
        let Some(rp) = classify(&dir, &path) else {
            continue;
        };
        if rp.canary {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let rule = engine
            .compile(&bytes)
            .with_context(|| format!("cannot load rule {}", path.display()))?;
        let policy = config.tenants.policy(&rp.tenant);
        for f in &rule.manifest().filters {
            policy
                .check_filter(f)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("rule {}", path.display()))?;
        }
        let n = slots.len();
        let tenant_slot = *slots.entry(rp.tenant.clone()).or_insert(n);
        let version = rule.manifest().version.clone().unwrap_or_default();
        let meters = metrics.rules.meters(&rp.tenant, &rp.id, &version);
        let hash = 0;
        set = set.with(Arc::new(LoadedRule {
            id: rp.id.as_str().into(),
            tenant: rp.tenant.as_str().into(),
            tenant_slot,
            path,
            generation: 1,
            hash,
            rule,
            policy,
            health: RuleHealth::new(),
            meters,
            canary: None,
            version_shared: version.as_str().into(),
        }));
    }
    if set.is_empty() {
        bail!(
            "no rules in {} (NAME.wasm or TENANT/NAME.wasm)",
            dir.display()
        );
    }
    Ok(set)
}

/// The Redis a replay writes to: commands queued and sent in pipelines, flushed before
/// every read so that reads see the writes before them.
struct LiveRedis {
    conn: redis::Connection,
    pending: Vec<redis::Cmd>,
    written: u64,
    refused: u64,
    reported: bool,
}

impl LiveRedis {
    fn connect(url: &str) -> anyhow::Result<LiveRedis> {
        let client = redis::Client::open(url).with_context(|| format!("--redis-url {url:?}"))?;
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        Ok(LiveRedis {
            conn,
            pending: Vec::new(),
            written: 0,
            refused: 0,
            reported: false,
        })
    }

    fn queue(&mut self, commands: &Commands) -> anyhow::Result<()> {
        for c in commands.iter() {
            self.pending.push(cmd_of(c.args()));
        }
        if self.pending.len() >= PIPELINE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for c in self.pending.drain(..) {
            pipe.add_command(c);
        }
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe
            .query(&mut self.conn)
            .context("writing to Redis failed; the replay stopped")?;
        for r in replies {
            match r {
                Ok(redis::Value::ServerError(e)) => self.refuse(&e.to_string()),
                Err(e) => self.refuse(&e.to_string()),
                Ok(_) => self.written += 1,
            }
        }
        Ok(())
    }

    fn refuse(&mut self, e: &str) {
        self.refused += 1;
        if !std::mem::replace(&mut self.reported, true) {
            tracing::warn!("Redis refused a replayed command: {e} (further refusals are counted)");
        }
    }
}

/// A dry run's reads: refused as the tenant's read policy refuses them when served,
/// else answered from the recording.
struct DryReads {
    policy: Arc<TenantPolicy>,
    recorded: RecordedReads,
}

impl RedisReads for DryReads {
    fn read(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
        max_reply: usize,
    ) -> Result<Reply, ReadCode> {
        self.policy.apply_read(args, &mut Commands::new())?;
        let reply = self.recorded.read(args, timeout, max_reply)?;
        if reply.encoded_len() > max_reply {
            return Err(ReadCode::OverBudget);
        }
        Ok(reply)
    }
}

/// A v2 rule's reads against the live Redis, namespaced by its tenant's policy.
struct LivePort {
    redis: LiveRedis,
    policy: Arc<TenantPolicy>,
}

impl RedisReads for LivePort {
    fn read(
        &mut self,
        args: &[&[u8]],
        _timeout: Duration,
        max_reply: usize,
    ) -> Result<Reply, ReadCode> {
        let mut command = Commands::new();
        self.policy.apply_read(args, &mut command)?;
        self.redis.flush().map_err(|_| ReadCode::Unavailable)?;
        let cmd = cmd_of(command.iter().next().into_iter().flat_map(|c| c.args()));
        let value: redis::Value = match cmd.query(&mut self.redis.conn) {
            Ok(v) => v,
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                return Err(ReadCode::RedisError);
            }
            Err(_) => return Err(ReadCode::Unavailable),
        };
        let reply = reply_of(value)?;
        if reply.encoded_len() > max_reply {
            return Err(ReadCode::OverBudget);
        }
        Ok(reply)
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (`2026-12-02T11:00:00.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A time for `--from`/`--to`: milliseconds since the Unix epoch, or RFC 3339 in UTC
/// (`2026-12-02T11:00:00Z`, fractions of a second allowed).
///
/// # Errors
///
/// When it is neither, naming what was expected.
pub fn parse_time(s: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    // Hand-written: the two formats are all replay takes, and no date crate is in the
    // dependency tree.
    let bad = || {
        anyhow::anyhow!(
            "{s:?} is not a time: give ms since the Unix epoch, or RFC 3339 in UTC like 2026-12-02T11:00:00Z"
        )
    };
    let t = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let num = |x: &str| x.parse::<u64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let h: Vec<&str> = hms.split(':').collect();
    let [hh, mi, ss] = h.as_slice() else {
        return Err(bad());
    };
    let (y, mo, da, hh, mi, ss) = (num(y)?, num(mo)?, num(da)?, num(hh)?, num(mi)?, num(ss)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || hh > 23 || mi > 59 || ss > 60 {
        return Err(bad());
    }
    let ms_frac = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&digits)?
    };
    let days = days_from_civil(y as i64, mo as u32, da as u32);
    let secs = days as u64 * 86_400 + hh * 3600 + mi * 60 + ss;
    Ok(secs * 1000 + ms_frac)
}

// Howard Hinnant's days-from-civil and its inverse (public-domain algorithms).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::format::{Encoder, SEGMENT_MAGIC, frame, segment_name};
    use crate::{EventEncoder, Message};

    /// A recording of three events for one rule: run (with the output the rule gives),
    /// quarantined, and shed over the CPU share. The replay runs and compares the first
    /// only, and counts the other two as not run when recorded.
    #[test]
    fn invocations_recorded_as_not_run_are_counted_not_run() {
        let engine = Engine::new(crate::engine::Limits::default(), 2).unwrap();
        let rules = tempfile::tempdir().unwrap();
        let wat = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../rules-wasm/wat/store-last-message.wat"
        );
        let bytes = wat::parse_file(wat).unwrap();
        std::fs::write(rules.path().join("store-last-message.wasm"), &bytes).unwrap();
        let rule = engine.compile(&bytes).unwrap();

        let mut event = Vec::new();
        let m = Message::new(
            "store-last-message/dev-1",
            &b"{\"temp\":21.5}"[..],
            0,
            false,
        );
        EventEncoder::new("n").publish_event(&m, &mut event);
        let mut commands = Commands::new();
        rule.invoke(&event, &mut commands).unwrap();
        assert_eq!(commands.len(), 1, "the rule writes one command");

        let rec = tempfile::tempdir().unwrap();
        let mut segment = SEGMENT_MAGIC.to_vec();
        let kinds = [None, Some("quarantined"), Some("cpu_budget")];
        for (i, kind) in kinds.into_iter().enumerate() {
            let mut payload = Vec::new();
            let mut e = Encoder(&mut payload);
            e.event(1_000 + i as u64, &m.topic, &event);
            e.invocations(1);
            let none = Commands::new();
            let out = if kind.is_none() { &commands } else { &none };
            e.invocation("store-last-message", "1", &[], out, &[], kind);
            frame(&payload, &mut segment);
        }
        std::fs::write(rec.path().join(segment_name(1)), &segment).unwrap();

        let report = replay(
            &engine,
            &ReplayOptions {
                files: vec![rec.path().to_owned()],
                rules_dir: rules.path().to_owned(),
                config: None,
                redis_url: None,
                from_ms: None,
                to_ms: None,
                examples: 3,
            },
        )
        .unwrap();
        let r = &report.rules["store-last-message"];
        assert_eq!(report.events, 3);
        assert_eq!(r.not_run_when_recorded, 2, "{r:?}");
        assert_eq!((r.invocations, r.compared, r.differing), (1, 1, 0), "{r:?}");
        assert!(r.failures.is_empty(), "{r:?}");
    }

    #[test]
    fn times_parse_both_ways() {
        assert_eq!(parse_time("1700000000123").unwrap(), 1_700_000_000_123);
        let ms = parse_time("2026-12-02T11:00:00.5Z").unwrap();
        assert_eq!(rfc3339(ms), "2026-12-02T11:00:00.500Z");
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_time("2000-03-01T00:00:00Z").unwrap(), 951_868_800_000);
        let e = parse_time("yesterday").unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
        assert!(parse_time("2026-13-02T11:00:00Z").is_err());
    }
}
