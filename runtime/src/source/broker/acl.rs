//! The embedded broker's access control list: which client may publish or subscribe to
//! which topics. Read from a TOML file (`--acl FILE`, format in docs/broker.md); checked
//! by the broker's hook on every PUBLISH and SUBSCRIBE, and every decision becomes a
//! `client.check_authz_complete` event.
//!
//! Semantics follow EMQX's file authorization: rules are tried in order, the first rule
//! whose client, action and topic match decides, and when none does the file's
//! `no_match` answers (`authz_source` is then `default`). A SUBSCRIBE filter is matched
//! against a rule's filter as if it were a topic name (`a/+` is matched by `a/#`), and a
//! rule topic written `eq a/#` matches only that exact filter.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::topic;

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
}

impl Action {
    /// EMQX's name: `publish` or `subscribe`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub clientid: &'a str,
    pub username: Option<&'a str>,
    pub ipaddress: Option<std::net::IpAddr>,
}

/// The answer and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// `file` when a rule decided, `default` when none matched.
    pub source: &'static str,
}

/// A parsed ACL.
#[derive(Debug, Clone)]
pub struct Acl {
    rules: Vec<Rule>,
    no_match: bool,
}

impl Default for Acl {
    /// No rules: everything is allowed.
    fn default() -> Self {
        Acl {
            rules: Vec::new(),
            no_match: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    allow: bool,
    publish: bool,
    subscribe: bool,
    who: Who,
    topics: Vec<TopicPattern>,
}

#[derive(Debug, Clone)]
enum Who {
    All,
    Clientid(String),
    Username(String),
    Ipaddress(std::net::IpAddr),
}

#[derive(Debug, Clone)]
enum TopicPattern {
    /// An MQTT filter, possibly with `%c` / `%u` placeholders.
    Filter(String),
    /// `eq <filter>`: that exact string.
    Exact(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    no_match: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    permission: String,
    action: String,
    clientid: Option<String>,
    username: Option<String>,
    ipaddress: Option<String>,
    topics: Vec<String>,
}

fn permission(s: &str) -> anyhow::Result<bool> {
    match s {
        "allow" => Ok(true),
        "deny" => Ok(false),
        other => bail!("{other:?} is not \"allow\" or \"deny\""),
    }
}

impl Acl {
    /// Reads an ACL file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or a rule is malformed; the message names the file
    /// and the rule.
    pub fn from_file(path: &Path) -> anyhow::Result<Acl> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read ACL file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in ACL file {}", path.display()))
    }

    /// Parses ACL text.
    ///
    /// # Errors
    ///
    /// As [`Acl::from_file`].
    pub fn from_toml(text: &str) -> anyhow::Result<Acl> {
        let raw: RawAcl = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let no_match =
            permission(raw.no_match.as_deref().unwrap_or("allow")).context("no_match")?;
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rule::parse(r).with_context(|| format!("rules[{i}]")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Acl { rules, no_match })
    }

    /// Whether `client` may do `action` on `topic` (a topic name for publish, a filter
    /// for subscribe).
    pub fn check(&self, client: &Client<'_>, action: Action, topic: &str) -> Decision {
        for rule in &self.rules {
            if rule.applies(client, action, topic) {
                return Decision {
                    allow: rule.allow,
                    source: "file",
                };
            }
        }
        Decision {
            allow: self.no_match,
            source: "default",
        }
    }
}

impl Rule {
    fn parse(r: RawRule) -> anyhow::Result<Rule> {
        let allow = permission(&r.permission).context("permission")?;
        let (publish, subscribe) = match r.action.as_str() {
            "publish" => (true, false),
            "subscribe" => (false, true),
            "all" => (true, true),
            other => bail!("action: {other:?} is not \"publish\", \"subscribe\" or \"all\""),
        };
        let who = match (r.clientid, r.username, r.ipaddress) {
            (None, None, None) => Who::All,
            (Some(c), None, None) => Who::Clientid(c),
            (None, Some(u), None) => Who::Username(u),
            (None, None, Some(ip)) => Who::Ipaddress(
                ip.parse()
                    .map_err(|_| anyhow::anyhow!("ipaddress: {ip:?} is not an IP address"))?,
            ),
            _ => bail!("give at most one of clientid, username, ipaddress"),
        };
        if r.topics.is_empty() {
            bail!("topics: empty (a rule needs at least one topic)");
        }
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let (pattern, filter) = match t.strip_prefix("eq ") {
                    Some(exact) => (TopicPattern::Exact(exact.to_owned()), exact.to_owned()),
                    None => (TopicPattern::Filter(t.clone()), t.clone()),
                };
                // Placeholders stand for one whole level; check the filter with them
                // replaced by a plain level.
                let probe = filter.replace("%c", "x").replace("%u", "x");
                topic::validate_filter(&probe)
                    .map_err(|e| anyhow::anyhow!("topics: {t:?}: {e}"))?;
                Ok(pattern)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Rule {
            allow,
            publish,
            subscribe,
            who,
            topics,
        })
    }

    fn applies(&self, client: &Client<'_>, action: Action, topic: &str) -> bool {
        let action_matches = match action {
            Action::Publish => self.publish,
            Action::Subscribe => self.subscribe,
        };
        let who_matches = match &self.who {
            Who::All => true,
            Who::Clientid(c) => c == client.clientid,
            Who::Username(u) => client.username == Some(u.as_str()),
            Who::Ipaddress(ip) => client.ipaddress == Some(*ip),
        };
        action_matches
            && who_matches
            && self.topics.iter().any(|p| match p {
                TopicPattern::Exact(t) => t == topic,
                TopicPattern::Filter(f) if f.contains('%') => {
                    // A placeholder with no value (no username) matches nothing.
                    if f.contains("%u") && client.username.is_none() {
                        return false;
                    }
                    let f = f
                        .replace("%c", client.clientid)
                        .replace("%u", client.username.unwrap_or_default());
                    topic::matches(&f, topic)
                }
                TopicPattern::Filter(f) => topic::matches(f, topic),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r##"
        no_match = "allow"
        [[rules]]
        permission = "allow"
        action = "all"
        username = "admin"
        topics = ["#", "$SYS/#"]
        [[rules]]
        permission = "deny"
        action = "subscribe"
        topics = ["$SYS/#", "eq #"]
        [[rules]]
        permission = "deny"
        action = "publish"
        topics = ["forbidden/#"]
        [[rules]]
        permission = "allow"
        action = "publish"
        topics = ["devices/%c/#"]
    "##;

    fn client<'a>(id: &'a str, user: Option<&'a str>) -> Client<'a> {
        Client {
            clientid: id,
            username: user,
            ipaddress: None,
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let acl = Acl::from_toml(DEMO).unwrap();
        let dev = client("dev-1", Some("dev"));
        let admin = client("ops", Some("admin"));
        let check = |c: &Client, a, t| acl.check(c, a, t);
        assert!(!check(&dev, Action::Subscribe, "$SYS/brokers/+/clients").allow);
        assert!(check(&admin, Action::Subscribe, "$SYS/#").allow);
        // `eq #` denies exactly `#`, not other filters.
        assert!(!check(&dev, Action::Subscribe, "#").allow);
        assert_eq!(
            check(&dev, Action::Subscribe, "a/#"),
            Decision {
                allow: true,
                source: "default"
            }
        );
        assert_eq!(
            check(&dev, Action::Publish, "forbidden/x"),
            Decision {
                allow: false,
                source: "file"
            }
        );
        assert!(check(&dev, Action::Subscribe, "forbidden/x").allow);
        assert_eq!(
            check(&dev, Action::Publish, "devices/dev-1/t").source,
            "file"
        );
        assert_eq!(
            check(&dev, Action::Publish, "devices/dev-2/t").source,
            "default"
        );
    }

    #[test]
    fn subscribe_filters_match_as_topics() {
        let acl = Acl::from_toml(
            r##"
            no_match = "allow"
            [[rules]]
            permission = "deny"
            action = "subscribe"
            topics = ["secret/#"]
            "##,
        )
        .unwrap();
        let c = client("c", None);
        assert!(!acl.check(&c, Action::Subscribe, "secret/+").allow);
        assert!(!acl.check(&c, Action::Subscribe, "secret/#").allow);
        assert!(acl.check(&c, Action::Subscribe, "+/x").allow);
    }

    #[test]
    fn no_match_deny_and_placeholders_without_username() {
        let acl = Acl::from_toml(
            r##"
            no_match = "deny"
            [[rules]]
            permission = "allow"
            action = "publish"
            topics = ["users/%u/#"]
            "##,
        )
        .unwrap();
        assert!(
            acl.check(&client("c", Some("bob")), Action::Publish, "users/bob/x")
                .allow
        );
        assert!(
            !acl.check(&client("c", None), Action::Publish, "users//x")
                .allow
        );
        assert_eq!(
            acl.check(&client("c", None), Action::Publish, "a").source,
            "default"
        );
    }

    #[test]
    fn malformed_rules_are_named() {
        let err = |t: &str| format!("{:#}", Acl::from_toml(t).unwrap_err());
        assert!(
            err("[[rules]]\npermission = \"maybe\"\naction = \"all\"\ntopics = [\"a\"]")
                .contains("rules[0]: permission")
        );
        assert!(
            err("[[rules]]\npermission = \"deny\"\naction = \"read\"\ntopics = [\"a\"]")
                .contains("action")
        );
        assert!(
            err("[[rules]]\npermission = \"deny\"\naction = \"all\"\ntopics = [\"a/#/b\"]")
                .contains("a/#/b")
        );
        assert!(
            err("[[rules]]\npermission = \"deny\"\naction = \"all\"\ntopics = []")
                .contains("empty")
        );
        assert!(err("[[rules]]\npermission = \"deny\"\naction = \"all\"\nclientid = \"a\"\nusername = \"b\"\ntopics = [\"a\"]").contains("at most one"));
        assert!(err("bogus = 1").contains("bogus"));
    }
}
