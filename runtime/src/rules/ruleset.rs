//! The set of rules currently serving, and the one place that swaps it.
//!
//! A [`RuleSet`] is immutable; a change builds a new one and [`Rules::swap`] publishes it
//! atomically. A worker takes one snapshot per message, so an event runs entirely on the
//! versions that were current when it was dispatched: in-flight events finish on the old
//! version, and no event is handled twice by a rule or by two versions of it.
//!
//! Canaries (`NAME.canary.wasm`, docs/canary.md) are held beside the live rules, keyed
//! by the id of the rule they shadow: they match no topic themselves, and a worker finds
//! a live rule's canary by the rule's position ([`RuleSet::canary_at`]), which is an
//! empty-vector check while no canary is loaded.
//!
//! This file does not read files (`reload.rs`) or run rules (`dispatch.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::event::EventKind;
use crate::ops::canary_metrics::CanaryMeters;
use crate::ops::rule_metrics::RuleMeters;
use crate::rules::engine::Rule;
use crate::tenancy::policy::TenantPolicy;
use crate::tenancy::quarantine::RuleHealth;
use crate::topic::{TopicIndex, minimal_cover};

/// Tenant of rules placed directly in the rules directory.
pub const DEFAULT_TENANT: &str = "default";

/// Filters with this prefix name broker events (EMQX's `$events/...`), which come from
/// event sources rather than from an MQTT subscription.
pub const EVENT_TOPIC_PREFIX: &str = "$events/";

/// One loaded version of a rule file.
#[derive(Debug)]
pub struct LoadedRule {
    /// Stable identity: the file's path under the rules directory without `.wasm`
    /// (`store-last-message`, `acme/counter`).
    pub id: Arc<str>,
    /// Owner of the rule: the subdirectory, or [`DEFAULT_TENANT`].
    pub tenant: Arc<str>,
    /// A small number naming the tenant, the same for all its rules, for per-tenant
    /// state kept in arrays (`cpu_budget.rs`).
    pub tenant_slot: usize,
    pub path: PathBuf,
    /// Counts the versions of this id loaded since start (1 for the first, 2 after a
    /// replacement): the load counter, not the author's version ([`LoadedRule::version`]).
    pub generation: u64,
    /// Hash of the file's bytes, to skip reloading identical content.
    pub hash: u64,
    pub rule: Rule,
    /// The tenant's policy when this version was loaded.
    pub policy: Arc<TenantPolicy>,
    /// Failures and quarantine of this version.
    pub health: RuleHealth,
    /// This version's `/metrics` series, resolved at load (`ops/rule_metrics.rs`).
    pub meters: RuleMeters,
    /// Set when this version is a canary: what the comparison with the live version
    /// counts and where its differences go.
    pub canary: Option<Box<Canary>>,
    /// [`LoadedRule::version`], shared by every write batch entry that names this
    /// version (one allocation per load instead of one per event).
    pub version_shared: Arc<str>,
}

/// What a canary version has that a live one has not.
#[derive(Debug)]
pub struct Canary {
    /// Events compared, differences, failures, the last differences.
    pub meters: CanaryMeters,
    /// The tenant's diff stream for this rule: `<key prefix>wasmrule:canary:<rule>`.
    pub stream_key: Vec<u8>,
    /// `MAXLEN ~` of the stream, as the argument.
    pub stream_maxlen: String,
}

impl LoadedRule {
    /// The version the author gave the rule in its manifest (`"0.1.0"`), or `""`.
    pub fn version(&self) -> &str {
        self.rule.manifest().version.as_deref().unwrap_or_default()
    }
}

/// An immutable set of rules with a topic index over their filters.
#[derive(Default)]
pub struct RuleSet {
    by_id: BTreeMap<Arc<str>, Arc<LoadedRule>>,
    list: Vec<Arc<LoadedRule>>,
    index: TopicIndex<usize>,
    // Canary versions by the id of the rule they shadow.
    canaries: BTreeMap<Arc<str>, Arc<LoadedRule>>,
    // Position in `list` -> that rule's canary; empty while there is no canary.
    canary_of: Vec<Option<Arc<LoadedRule>>>,
    // Whether some rule's tenant has a CPU share below 100% (`cpu_budget.rs`).
    metered: bool,
}

impl RuleSet {
    fn build(
        by_id: BTreeMap<Arc<str>, Arc<LoadedRule>>,
        canaries: BTreeMap<Arc<str>, Arc<LoadedRule>>,
    ) -> RuleSet {
        let list: Vec<Arc<LoadedRule>> = by_id.values().cloned().collect();
        let canary_of = if canaries.is_empty() {
            Vec::new()
        } else {
            list.iter().map(|r| canaries.get(&r.id).cloned()).collect()
        };
        let mut index = TopicIndex::new();
        for (i, r) in list.iter().enumerate() {
            for f in &r.rule.manifest().filters {
                match RedisTrigger::parse(f, &r.policy.key_prefix) {
                    // A Redis trigger matches the namespaced channel or stream only.
                    Some(t) => index.insert(&t.topic(), i),
                    None => index.insert(f, i),
                }
            }
        }
        let metered = list.iter().any(|r| r.policy.cpu.is_limited());
        RuleSet {
            by_id,
            list,
            index,
            canaries,
            canary_of,
            metered,
        }
    }

    /// Whether some rule belongs to a tenant with a CPU share (below 100%): only then do
    /// workers keep track of whose events are waiting (`dispatch.rs`).
    pub fn metered(&self) -> bool {
        self.metered
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no rule is loaded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<LoadedRule>> {
        self.by_id.get(id)
    }

    /// All rules, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedRule>> {
        self.list.iter()
    }

    /// Fills `out` with the positions of the rules matching `topic` (see
    /// [`RuleSet::at`]), each once even if several of its filters match, in id order.
    /// `out` is the caller's, so the per-message path does not allocate.
    pub fn matching(&self, topic: &str, out: &mut Vec<usize>) {
        out.clear();
        self.index.for_each_match(topic, |&i| out.push(i));
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// Whether some rule's filter matches `topic` (event sources ask before building an
    /// event nobody wants).
    pub fn wants(&self, topic: &str) -> bool {
        let mut any = false;
        self.index.for_each_match(topic, |_| any = true);
        any
    }

    /// The rule at position `i` of [`RuleSet::matching`].
    pub fn at(&self, i: usize) -> &Arc<LoadedRule> {
        &self.list[i]
    }

    /// The MQTT subscriptions that deliver every message some rule wants: the rules'
    /// filters without event topics and without filters covered by others.
    pub fn subscriptions(&self) -> Vec<String> {
        minimal_cover(
            self.list
                .iter()
                .flat_map(|r| r.rule.manifest().filters.iter())
                .map(String::as_str)
                .filter(|f| !f.starts_with(EVENT_TOPIC_PREFIX) && !f.starts_with(REDIS_PREFIX)),
        )
    }

    /// The Redis channels and streams some rule wants, namespaced, each once.
    pub fn redis_triggers(&self) -> Vec<RedisTrigger> {
        let mut all: Vec<RedisTrigger> = self
            .list
            .iter()
            .flat_map(|r| {
                r.rule
                    .manifest()
                    .filters
                    .iter()
                    .filter_map(|f| RedisTrigger::parse(f, &r.policy.key_prefix))
            })
            .collect();
        all.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        all.dedup_by(|a, b| a.kind == b.kind && a.key == b.key);
        all
    }

    /// The broker event kinds some rule asks for (`$events/...` filters, wildcards
    /// included).
    pub fn event_kinds(&self) -> Vec<EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(|k| self.wants(k.topic()))
            .collect()
    }

    /// What the rules ask sources for.
    pub fn wanted(&self) -> Wanted {
        Wanted {
            filters: self.subscriptions(),
            events: self.event_kinds(),
            redis: self.redis_triggers(),
        }
    }

    /// The canary of the rule at position `i` of [`RuleSet::matching`], if it has one.
    pub fn canary_at(&self, i: usize) -> Option<&Arc<LoadedRule>> {
        self.canary_of.get(i).and_then(Option::as_ref)
    }

    /// The canary shadowing rule `id`.
    pub fn canary(&self, id: &str) -> Option<&Arc<LoadedRule>> {
        self.canaries.get(id)
    }

    /// All canaries, ordered by the id of the rule they shadow.
    pub fn canaries(&self) -> impl Iterator<Item = &Arc<LoadedRule>> {
        self.canaries.values()
    }

    /// A copy with `rule` added or replacing the rule with the same id.
    pub fn with(&self, rule: Arc<LoadedRule>) -> RuleSet {
        let mut by_id = self.by_id.clone();
        by_id.insert(rule.id.clone(), rule);
        RuleSet::build(by_id, self.canaries.clone())
    }

    /// A copy without the rule `id`.
    pub fn without(&self, id: &str) -> RuleSet {
        let mut by_id = self.by_id.clone();
        by_id.remove(id);
        RuleSet::build(by_id, self.canaries.clone())
    }

    /// A copy with `canary` shadowing the rule of its id (added or replacing).
    pub fn with_canary(&self, canary: Arc<LoadedRule>) -> RuleSet {
        let mut canaries = self.canaries.clone();
        canaries.insert(canary.id.clone(), canary);
        RuleSet::build(self.by_id.clone(), canaries)
    }

    /// A copy without the canary of rule `id`.
    pub fn without_canary(&self, id: &str) -> RuleSet {
        let mut canaries = self.canaries.clone();
        canaries.remove(id);
        RuleSet::build(self.by_id.clone(), canaries)
    }
}

/// What the loaded rules ask event sources for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// MQTT subscriptions that deliver every message some rule wants
    /// ([`RuleSet::subscriptions`]).
    pub filters: Vec<String>,
    /// Broker event kinds some rule asks for ([`RuleSet::event_kinds`]).
    pub events: Vec<EventKind>,
    /// Redis channels and streams some rule asks for ([`RuleSet::redis_triggers`]).
    pub redis: Vec<RedisTrigger>,
}

/// Filters of events from Redis start with this (docs/abi.md, "Events from Redis").
pub const REDIS_PREFIX: &str = "$redis/";

/// Which kind of Redis trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TriggerKind {
    Channel,
    Stream,
}

/// One Redis channel or stream a rule is triggered by, in its tenant's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTrigger {
    pub kind: TriggerKind,
    /// The channel or stream key in Redis, with the tenant's prefix.
    pub key: Vec<u8>,
    /// As the rule named it, without the prefix.
    pub name: String,
}

impl RedisTrigger {
    /// The trigger of filter `f` (`$redis/channel/NAME`, `$redis/stream/NAME`) for a
    /// tenant whose keys start with `prefix`; `None` for other filters.
    pub fn parse(f: &str, prefix: &[u8]) -> Option<RedisTrigger> {
        let rest = f.strip_prefix(REDIS_PREFIX)?;
        let (kind, name) = if let Some(n) = rest.strip_prefix("channel/") {
            (TriggerKind::Channel, n)
        } else {
            (TriggerKind::Stream, rest.strip_prefix("stream/")?)
        };
        Some(RedisTrigger {
            kind,
            key: [prefix, name.as_bytes()].concat(),
            name: name.to_owned(),
        })
    }

    /// The topic events of this trigger carry inside wasmrule (and rules are indexed
    /// by): the namespaced key under `$redis/channel/` or `$redis/stream/`.
    pub fn topic(&self) -> String {
        let kind = match self.kind {
            TriggerKind::Channel => "channel",
            TriggerKind::Stream => "stream",
        };
        format!(
            "{REDIS_PREFIX}{kind}/{}",
            String::from_utf8_lossy(&self.key)
        )
    }
}

/// The current [`RuleSet`], readable from any thread without locking, what it asks
/// sources for, and why the files that are not serving were refused.
pub struct Rules {
    current: ArcSwap<RuleSet>,
    wanted: watch::Sender<Wanted>,
    // Rule id -> why its file's latest content was refused at load.
    load_errors: Mutex<BTreeMap<String, String>>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            current: ArcSwap::from_pointee(RuleSet::default()),
            wanted: watch::Sender::new(Wanted::default()),
            load_errors: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Rules {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot of the current set.
    pub fn snapshot(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// A cheap guard on the current set, for the per-message path.
    pub fn load(&self) -> arc_swap::Guard<Arc<RuleSet>> {
        self.current.load()
    }

    /// Publishes `set` as the current set and updates what it asks sources for.
    pub fn swap(&self, set: RuleSet) {
        let wanted = set.wanted();
        self.current.store(Arc::new(set));
        self.wanted.send_if_modified(|w| {
            if *w == wanted {
                false
            } else {
                *w = wanted;
                true
            }
        });
    }

    /// Why the latest content of rule `id`'s file was refused at load (the same reason
    /// the log gives), or `None` if it loaded or was never seen.
    pub fn load_error(&self, id: &str) -> Option<String> {
        self.errors().get(id).cloned()
    }

    /// Every rule file whose latest content was refused, by rule id, with the reason.
    pub fn load_errors(&self) -> BTreeMap<String, String> {
        self.errors().clone()
    }

    /// Records why rule `id`'s file was refused, or with `None` that it loaded or went
    /// away.
    pub fn set_load_error(&self, id: &str, reason: Option<String>) {
        let mut errors = self.errors();
        match reason {
            Some(r) => errors.insert(id.to_owned(), r),
            None => errors.remove(id),
        };
    }

    fn errors(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A plain map, consistent after a panic elsewhere.
        self.load_errors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows what the current rules ask sources for: MQTT subscriptions and broker
    /// event kinds.
    pub fn wanted(&self) -> watch::Receiver<Wanted> {
        self.wanted.subscribe()
    }
}
