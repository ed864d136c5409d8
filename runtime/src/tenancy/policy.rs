//! What a tenant's rules may do: which commands, on which keys, subscribed to which
//! topics, within which limits. Every command a rule returns passes through
//! [`TenantPolicy::apply`] before it can reach Redis.
//!
//! Keys are namespaced by rewriting: each key argument (found from the command's key
//! positions, multi-key commands included) gets the tenant's prefix, and so does the
//! channel of `PUBLISH`. A rule cannot name a key outside its prefix, whatever bytes it
//! puts in the key (empty, binary, CRLF, `{hash-tags}`): the prefix always comes first.
//!
//! Commands are allowed by name from a list (default `DEFAULT_ALLOWED`); only commands
//! in the command table (`command_table.rs`), whose key positions are known, can be
//! allowed at all. Admin,
//! scripting, blocking, transaction and key-less commands are not in it and can never be
//! allowed. A command that is not allowed, has the wrong number of arguments, or breaks
//! a rule below rejects the whole output of that invocation: nothing from it is written.

use std::collections::HashSet;
use std::time::Duration;

use crate::actions::{MqttAction, Publish};
use crate::commands::Commands;
use crate::rules::engine::ReadCode;
use crate::tenancy::command_table::{CommandSpec, find_spec};
use crate::tenancy::cpu_budget::CpuBudget;
use crate::tenancy::read_table::find_read_spec;
use crate::topic;

/// Why a rule's output was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("command {index}: `{name}` is not allowed for tenant {tenant}")]
    NotAllowed {
        index: usize,
        name: String,
        tenant: String,
    },
    #[error("command {index}: `{name}` takes {expected} arguments, got {got}")]
    Arity {
        index: usize,
        name: &'static str,
        expected: String,
        got: usize,
    },
    #[error("command {index}: XADD must bound the stream with MAXLEN or MINID")]
    UnboundedStream { index: usize },
    #[error("command {index}: key of {len} bytes is longer than the {max}-byte limit")]
    KeyTooLong {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("action {index}: {kind} to {topic:?}: {why} for tenant {tenant}")]
    Topic {
        index: usize,
        kind: &'static str,
        topic: String,
        why: String,
        tenant: String,
    },
    #[error(
        "action {index}: {kind} names client {client:?}, which tenant {tenant} may not \
         address (its clients: {clients})"
    )]
    Client {
        index: usize,
        kind: &'static str,
        client: String,
        tenant: String,
        clients: String,
    },
}

impl PolicyError {
    /// A short stable name for counting and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::NotAllowed { .. } => "command_not_allowed",
            PolicyError::Arity { .. } => "command_arity",
            PolicyError::UnboundedStream { .. } => "unbounded_stream",
            PolicyError::KeyTooLong { .. } => "key_too_long",
            PolicyError::Topic { .. } => "action_topic",
            PolicyError::Client { .. } => "action_client",
        }
    }
}

/// Longest key (after the prefix) a rule may write: long keys are almost always a bug,
/// and Redis keeps every byte of them in memory.
pub const MAX_KEY_LEN: usize = 4096;

pub use crate::rules::engine::InvokeLimits;

/// When a failing rule is taken out of service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// Failures within `window` that quarantine a rule.
    pub failures: u32,
    pub window: Duration,
    /// First quarantine lasts this long; each repeat doubles it, up to an hour.
    pub backoff: Duration,
}

/// One tenant's policy.
#[derive(Debug, Clone)]
pub struct TenantPolicy {
    pub tenant: String,
    /// Prepended to every key and channel.
    pub key_prefix: Vec<u8>,
    allowed: HashSet<&'static str>,
    /// Topic filters the tenant's rules may subscribe to.
    pub topics: Vec<String>,
    pub limits: InvokeLimits,
    /// Stream receiving failed events, and its approximate maximum length.
    pub dead_letter_key: Vec<u8>,
    pub dead_letter_maxlen: u64,
    pub quarantine: Quarantine,
    /// Share of each worker's time the tenant's rules may take (`cpu_budget.rs`).
    pub cpu: CpuBudget,
    /// Client-id prefixes the tenant's rules may subscribe, unsubscribe or deliver to
    /// (ABI v2 actions); `""` is every client.
    pub clients: Vec<String>,
}

impl TenantPolicy {
    /// A policy; `allowed` from
    /// [`resolve_allowed`](crate::tenancy::command_table::resolve_allowed).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tenant: &str,
        key_prefix: &str,
        allowed: HashSet<&'static str>,
        topics: Vec<String>,
        limits: InvokeLimits,
        dead_letter_maxlen: u64,
        quarantine: Quarantine,
    ) -> Self {
        TenantPolicy {
            tenant: tenant.to_owned(),
            key_prefix: key_prefix.as_bytes().to_vec(),
            allowed,
            topics,
            limits,
            dead_letter_key: [key_prefix.as_bytes(), b"wasmrule:deadletter"].concat(),
            dead_letter_maxlen,
            quarantine,
            cpu: CpuBudget::UNLIMITED,
            clients: Vec::new(),
        }
    }

    /// This policy with `clients` as the client-id prefixes it may address (none by
    /// default).
    pub fn with_clients(mut self, clients: Vec<String>) -> Self {
        self.clients = clients;
        self
    }

    /// This policy with `cpu` as the tenant's CPU budget (unlimited by default).
    pub fn with_cpu_budget(mut self, cpu: CpuBudget) -> Self {
        self.cpu = cpu;
        self
    }

    /// Whether the tenant may subscribe to `filter`.
    ///
    /// # Errors
    ///
    /// Names the filter and the tenant's allowed filters.
    pub fn check_filter(&self, filter: &str) -> Result<(), String> {
        // Redis triggers name channels and streams inside the tenant's namespace.
        if filter.starts_with(REDIS_TRIGGER_PREFIX) {
            return Ok(());
        }
        if self
            .topics
            .iter()
            .any(|allowed| topic::covers(allowed, filter))
        {
            Ok(())
        } else {
            Err(format!(
                "filter {filter:?} is outside what tenant {} may subscribe to ({})",
                self.tenant,
                self.topics.join(", ")
            ))
        }
    }

    /// Checks every command of `input` and appends them to `out` with keys and channels
    /// namespaced. On error nothing is appended.
    ///
    /// # Errors
    ///
    /// The first command that breaks the policy.
    pub fn apply(&self, input: &Commands, out: &mut Commands) -> Result<(), PolicyError> {
        let mark = out.mark();
        let r = self.apply_into(input, out);
        if r.is_err() {
            out.truncate(mark);
        }
        r
    }

    fn apply_into(&self, input: &Commands, out: &mut Commands) -> Result<(), PolicyError> {
        for (index, cmd) in input.iter().enumerate() {
            let name = cmd.name();
            let spec = find_spec(name)
                .filter(|s| self.allowed.contains(s.name))
                .ok_or_else(|| PolicyError::NotAllowed {
                    index,
                    name: String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned(),
                    tenant: self.tenant.clone(),
                })?;
            let argc = cmd.args().len();
            if !arity_ok(spec, argc) {
                let expected = if spec.arity >= 0 {
                    format!("{}", spec.arity - 1)
                } else {
                    format!("at least {}", spec.arity.unsigned_abs() - 1)
                };
                return Err(PolicyError::Arity {
                    index,
                    name: spec.name,
                    expected,
                    got: argc - 1,
                });
            }
            if spec.name == "XADD" && !xadd_is_bounded(cmd.args().skip(2)) {
                return Err(PolicyError::UnboundedStream { index });
            }
            self.push_namespaced(spec, cmd.args(), argc, out)
                .map_err(|len| PolicyError::KeyTooLong {
                    index,
                    len,
                    max: MAX_KEY_LEN,
                })?;
        }
        Ok(())
    }

    /// Appends one command to `out`: the canonical name, every key position prefixed.
    /// `Err` with the length of a key over [`MAX_KEY_LEN`] (the command is left
    /// half-written: the caller truncates).
    fn push_namespaced<'a>(
        &self,
        spec: &CommandSpec,
        args: impl Iterator<Item = &'a [u8]>,
        argc: usize,
        out: &mut Commands,
    ) -> Result<(), usize> {
        let last = if spec.last_key < 0 {
            (argc as i32 + spec.last_key) as usize
        } else {
            spec.last_key as usize
        };
        out.begin_command();
        for (i, arg) in args.enumerate() {
            if i == 0 {
                out.push_arg(spec.name.as_bytes());
            } else if i >= spec.first_key
                && i <= last
                && (i - spec.first_key).is_multiple_of(spec.step)
            {
                if arg.len() > MAX_KEY_LEN {
                    return Err(arg.len());
                }
                out.push_prefixed_arg(&self.key_prefix, arg);
            } else {
                out.push_arg(arg);
            }
        }
        Ok(())
    }
}

/// Filters of events from Redis (`$redis/channel/...`, `$redis/stream/...`), which
/// every tenant may declare: the channel or stream is in the tenant's namespace.
pub const REDIS_TRIGGER_PREFIX: &str = "$redis/";

impl TenantPolicy {
    /// Checks one ABI v2 read (`args[0]` is the command) against the read set and
    /// appends it to `out` with its keys namespaced, as [`TenantPolicy::apply`] does
    /// for writes.
    ///
    /// # Errors
    ///
    /// `not_allowed` for a command outside the read set; `bad_request` for a wrong
    /// number of arguments or a key over [`MAX_KEY_LEN`].
    pub fn apply_read(&self, args: &[&[u8]], out: &mut Commands) -> Result<(), ReadCode> {
        let name = args.first().ok_or(ReadCode::BadRequest)?;
        let spec = find_read_spec(name).ok_or(ReadCode::NotAllowed)?;
        if !arity_ok(spec, args.len()) {
            return Err(ReadCode::BadRequest);
        }
        let mark = out.mark();
        let r = if spec.name == "SORT_RO" {
            self.push_sort(args, out)
        } else {
            self.push_namespaced(spec, args.iter().copied(), args.len(), out)
                .map_err(|_| ReadCode::BadRequest)
        };
        r.inspect_err(|_| out.truncate(mark))
    }

    /// `SORT_RO key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC]
    /// [ALPHA]`, with the key and every pattern in the tenant's namespace: a pattern
    /// names keys (`msg:*->payload` is the field `payload` of `msg:<element>`), so it is
    /// prefixed like one; `GET #` (the element itself) is not a key. Any other word is
    /// refused, so nothing (`STORE`) can slip through.
    fn push_sort(&self, args: &[&[u8]], out: &mut Commands) -> Result<(), ReadCode> {
        use crate::tenancy::read_table::SORT_PATTERN_OPTIONS;
        let key = |arg: &[u8], out: &mut Commands| {
            if arg.len() > MAX_KEY_LEN {
                return Err(ReadCode::BadRequest);
            }
            out.push_prefixed_arg(&self.key_prefix, arg);
            Ok(())
        };
        out.begin_command();
        out.push_arg(b"SORT_RO");
        key(args[1], out)?;
        let mut rest = args[2..].iter();
        while let Some(word) = rest.next() {
            out.push_arg(word);
            if SORT_PATTERN_OPTIONS
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(word))
            {
                let pattern = rest.next().ok_or(ReadCode::BadRequest)?;
                if word.eq_ignore_ascii_case(b"GET") && *pattern == b"#" {
                    out.push_arg(pattern);
                } else {
                    key(pattern, out)?;
                }
            } else if word.eq_ignore_ascii_case(b"LIMIT") {
                for _ in 0..2 {
                    out.push_arg(rest.next().ok_or(ReadCode::BadRequest)?);
                }
            } else if !["ASC", "DESC", "ALPHA"]
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(word))
            {
                return Err(ReadCode::BadRequest);
            }
        }
        Ok(())
    }

    /// Checks every MQTT action of one invocation; one refused action refuses them all.
    ///
    /// # Errors
    ///
    /// The first action outside the tenant's topics or clients, or with an invalid
    /// topic or filter.
    pub fn check_actions(&self, actions: &[MqttAction]) -> Result<(), PolicyError> {
        for (index, a) in actions.iter().enumerate() {
            match a {
                MqttAction::Publish(p) => self.check_publish(index, a.kind(), p)?,
                MqttAction::Deliver { client, message } => {
                    self.check_client(index, a.kind(), client)?;
                    self.check_publish(index, a.kind(), message)?;
                }
                MqttAction::Subscribe { client, filter, .. }
                | MqttAction::Unsubscribe { client, filter } => {
                    self.check_client(index, a.kind(), client)?;
                    let refused = |why: String| PolicyError::Topic {
                        index,
                        kind: a.kind(),
                        topic: filter.clone(),
                        why,
                        tenant: self.tenant.clone(),
                    };
                    topic::validate_filter(filter)
                        .map_err(|e| refused(format!("invalid filter: {e}")))?;
                    if !self.topics.iter().any(|t| topic::covers(t, filter)) {
                        return Err(refused(self.outside_topics()));
                    }
                }
            }
        }
        Ok(())
    }

    fn outside_topics(&self) -> String {
        format!("outside the tenant's topics ({})", self.topics.join(", "))
    }

    fn check_publish(
        &self,
        index: usize,
        kind: &'static str,
        p: &Publish,
    ) -> Result<(), PolicyError> {
        let refused = |why: String| PolicyError::Topic {
            index,
            kind,
            topic: p.topic.clone(),
            why,
            tenant: self.tenant.clone(),
        };
        if let Err(why) = valid_topic_name(&p.topic) {
            return Err(refused(why.into()));
        }
        if !self.topics.iter().any(|t| topic::covers(t, &p.topic)) {
            return Err(refused(self.outside_topics()));
        }
        Ok(())
    }

    fn check_client(
        &self,
        index: usize,
        kind: &'static str,
        client: &str,
    ) -> Result<(), PolicyError> {
        if self.clients.iter().any(|p| client.starts_with(p.as_str())) && !client.is_empty() {
            return Ok(());
        }
        let clients = if self.clients.is_empty() {
            "none".to_owned()
        } else {
            self.clients
                .iter()
                .map(|p| format!("{p}*"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(PolicyError::Client {
            index,
            kind,
            client: client.to_owned(),
            tenant: self.tenant.clone(),
            clients,
        })
    }
}

/// A topic a client may publish to: not empty, no wildcards, no NUL, not a `$` topic
/// (those are the broker's), at most 65,535 bytes.
fn valid_topic_name(t: &str) -> Result<(), &'static str> {
    if t.is_empty() {
        return Err("the topic is empty");
    }
    if t.len() > 65_535 {
        return Err("the topic is longer than MQTT allows");
    }
    if t.contains(['+', '#']) {
        return Err("a topic to publish to has no wildcards");
    }
    if t.contains('\0') {
        return Err("the topic contains NUL");
    }
    if t.starts_with('$') {
        return Err("`$` topics are the broker's");
    }
    Ok(())
}

/// Whether `argc` arguments (the name included) fit `spec`'s arity.
fn arity_ok(spec: &CommandSpec, argc: usize) -> bool {
    if spec.arity >= 0 {
        argc == spec.arity as usize
    } else {
        argc >= spec.arity.unsigned_abs() as usize
    }
}

/// XADD's options before the id: a trimming option (MAXLEN/MINID) must be among them.
fn xadd_is_bounded<'a>(options: impl Iterator<Item = &'a [u8]>) -> bool {
    for a in options {
        if a.eq_ignore_ascii_case(b"MAXLEN") || a.eq_ignore_ascii_case(b"MINID") {
            return true;
        }
        // The entry id (`*` or `ms-seq`) ends the options.
        if a == b"*" || a.first().is_some_and(u8::is_ascii_digit) {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::command_table::{DEFAULT_ALLOWED, resolve_allowed};

    fn policy(prefix: &str, allowed: &[&str]) -> TenantPolicy {
        let names: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        TenantPolicy::new(
            "acme",
            prefix,
            resolve_allowed(&names).unwrap(),
            vec!["acme/#".into()],
            InvokeLimits {
                timeout: Duration::from_millis(10),
                max_memory: 1 << 20,
                max_commands: 100,
                max_output_bytes: 1 << 20,
            },
            1000,
            Quarantine {
                failures: 5,
                window: Duration::from_secs(60),
                backoff: Duration::from_secs(60),
            },
        )
    }

    fn apply(p: &TenantPolicy, cmds: &[&[&[u8]]]) -> Result<Vec<String>, PolicyError> {
        let mut input = Commands::new();
        for c in cmds {
            input.push(c.iter().copied());
        }
        let mut out = Commands::new();
        p.apply(&input, &mut out)?;
        Ok(out.iter().map(|c| c.to_string()).collect())
    }

    fn read(p: &TenantPolicy, args: &[&[u8]]) -> Result<String, ReadCode> {
        let mut out = Commands::new();
        p.apply_read(args, &mut out)?;
        Ok(out
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    }

    #[test]
    fn sort_ro_patterns_are_in_the_namespace() {
        let p = policy("acme:", DEFAULT_ALLOWED);
        let cmd: &[&[u8]] = &[
            b"sort_ro",
            b"ids",
            b"BY",
            b"nosort",
            b"LIMIT",
            b"0",
            b"10",
            b"GET",
            b"#",
            b"get",
            b"m:*->payload",
            b"DESC",
            b"ALPHA",
        ];
        assert_eq!(
            read(&p, cmd).unwrap(),
            "SORT_RO acme:ids BY acme:nosort LIMIT 0 10 GET # get acme:m:*->payload DESC ALPHA"
        );
        // STORE would write; an option without its argument is malformed.
        for bad in [
            &[&b"SORT_RO"[..], b"ids", b"STORE", b"out"][..],
            &[b"SORT_RO", b"ids", b"GET"],
            &[b"SORT_RO", b"ids", b"LIMIT", b"0"],
        ] {
            assert_eq!(read(&p, bad), Err(ReadCode::BadRequest), "{bad:?}");
        }
        assert_eq!(read(&p, &[b"SORT", b"ids"]), Err(ReadCode::NotAllowed));
    }

    #[test]
    fn prefixes_every_key_position() {
        let p = policy("acme:", DEFAULT_ALLOWED);
        let out = apply(
            &p,
            &[
                &[b"hset", b"h", b"f", b"v"],
                &[b"MSET", b"a", b"1", b"b", b"2"],
                &[b"DEL", b"x", b"y", b"z"],
                &[b"XADD", b"s", b"MAXLEN", b"~", b"10", b"*", b"f", b"v"],
                &[b"PUBLISH", b"ch", b"hi"],
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                "HSET acme:h f v",
                "MSET acme:a 1 acme:b 2",
                "DEL acme:x acme:y acme:z",
                "XADD acme:s MAXLEN ~ 10 * f v",
                "PUBLISH acme:ch hi",
            ]
        );
    }

    #[test]
    fn tricky_keys_stay_inside_the_prefix() {
        let p = policy("acme:", DEFAULT_ALLOWED);
        for key in [
            &b""[..],
            b"\x00\xff",
            b"\r\nFLUSHALL\r\n",
            b"{acme}x",
            b"{other}:k",
            b"../other:k",
        ] {
            let mut input = Commands::new();
            input.push([&b"SET"[..], key, b"v"]);
            let mut o = Commands::new();
            p.apply(&input, &mut o).unwrap();
            let k = o.get(0).unwrap().args().nth(1).unwrap().to_vec();
            assert!(k.starts_with(b"acme:"), "{k:?}");
            assert_eq!(&k[5..], key);
        }
        let long = vec![b'k'; MAX_KEY_LEN + 1];
        assert!(matches!(
            apply(&p, &[&[b"SET", &long, b"v"]]),
            Err(PolicyError::KeyTooLong { .. })
        ));
    }

    #[test]
    fn refuses_commands_outside_the_list_and_rejects_the_whole_output() {
        let p = policy("acme:", &["HSET"]);
        let mut input = Commands::new();
        input.push(["HSET", "h", "f", "v"]);
        input.push(["FLUSHALL"]);
        let mut out = Commands::new();
        out.push(["KEEP"]);
        let err = p.apply(&input, &mut out).unwrap_err();
        assert_eq!(err.kind(), "command_not_allowed");
        assert!(
            err.to_string()
                .contains("`FLUSHALL` is not allowed for tenant acme")
        );
        assert_eq!(out.len(), 1, "partial output written");
        for bad in [
            &[&b"SET"[..], b"k", b"v"][..],
            &[b"EVAL", b"return 1", b"0"],
            &[b"hsetx", b"k"],
        ] {
            assert!(apply(&p, &[bad]).is_err());
        }
    }

    #[test]
    fn checks_arity() {
        let p = policy("", DEFAULT_ALLOWED);
        assert_eq!(
            apply(&p, &[&[b"HINCRBY", b"k", b"f"]]).unwrap_err().kind(),
            "command_arity"
        );
        assert_eq!(apply(&p, &[&[b"DEL"]]).unwrap_err().kind(), "command_arity");
        assert!(apply(&p, &[&[b"SET", b"k", b"v", b"EX", b"10"]]).is_ok());
        let e = apply(&p, &[&[b"INCR", b"a", b"b"]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`INCR` takes 1 arguments, got 2"), "{e}");
    }

    #[test]
    fn xadd_must_be_bounded() {
        let p = policy("", DEFAULT_ALLOWED);
        let e = apply(&p, &[&[b"XADD", b"s", b"*", b"f", b"v"]]).unwrap_err();
        assert_eq!(e.kind(), "unbounded_stream");
        assert!(
            apply(
                &p,
                &[&[
                    b"XADD",
                    b"s",
                    b"NOMKSTREAM",
                    b"MINID",
                    b"0",
                    b"*",
                    b"f",
                    b"v"
                ]]
            )
            .is_ok()
        );
        // MAXLEN as a field name after the id does not count.
        assert!(apply(&p, &[&[b"XADD", b"s", b"*", b"MAXLEN", b"v"]]).is_err());
    }

    #[test]
    fn allow_lists_are_checked() {
        assert!(resolve_allowed(&["hset".into(), "ZADD".into()]).is_ok());
        let e = resolve_allowed(&["flushall".into()]).unwrap_err();
        assert!(
            e.contains("FLUSHALL can never be allowed (admin command)"),
            "{e}"
        );
        let e = resolve_allowed(&["GETDEL".into()]).unwrap_err();
        assert!(e.contains("not a command wasmrule knows"), "{e}");
        for name in DEFAULT_ALLOWED {
            assert!(find_spec(name.as_bytes()).is_some(), "{name}");
        }
    }

    #[test]
    fn topic_acl() {
        let p = policy("acme:", DEFAULT_ALLOWED);
        assert!(p.check_filter("acme/+/temp").is_ok());
        assert!(p.check_filter("acme/#").is_ok());
        let e = p.check_filter("#").unwrap_err();
        assert!(
            e.contains("outside what tenant acme may subscribe to (acme/#)"),
            "{e}"
        );
        assert!(p.check_filter("other/x").is_err());
        assert!(p.check_filter("+/x").is_err());
    }
}
