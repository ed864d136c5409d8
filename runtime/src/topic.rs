//! MQTT topic filters in the runtime: the grammar and matching of the shared
//! `wasmrule-topic` crate (also the guest SDK's and its macro's), the protocol's length
//! limit, the smallest covering set of filters, and an index from filters to values that
//! matches a topic in time proportional to its depth, not to the number of filters.

use std::collections::HashMap;

pub use wasmrule_topic::{FilterError, covers, matches};

/// Checks that `filter` is a valid MQTT topic filter: the grammar (`wasmrule-topic`)
/// and the protocol's length limit.
///
/// # Errors
///
/// The first rule the filter breaks.
pub fn validate_filter(filter: &str) -> Result<(), FilterError> {
    if filter.len() > wasmrule_topic::MAX_FILTER_BYTES {
        return Err(FilterError::TooLong);
    }
    wasmrule_topic::check_filter(filter)
}

/// The filters of `filters` not covered by another one (duplicates removed): subscribing
/// to these receives every message the full set would, with fewer overlapping
/// subscriptions. Sorted, for stable output.
pub fn minimal_cover<'a>(filters: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut all: Vec<&str> = filters.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    all.iter()
        .filter(|f| !all.iter().any(|w| w != *f && covers(w, f)))
        .map(|f| f.to_string())
        .collect()
}

/// Maps topic filters to values; [`TopicIndex::for_each_match`] visits the values of
/// every filter matching a topic.
#[derive(Debug, Clone)]
pub struct TopicIndex<T> {
    root: Node<T>,
}

#[derive(Debug, Clone)]
struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    plus: Option<Box<Node<T>>>,
    // Values of filters ending here with `#`.
    hash: Vec<T>,
    // Values of filters ending exactly here.
    exact: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            plus: None,
            hash: Vec::new(),
            exact: Vec::new(),
        }
    }
}

impl<T> Default for TopicIndex<T> {
    fn default() -> Self {
        TopicIndex {
            root: Node::default(),
        }
    }
}

impl<T> TopicIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` under the (valid) `filter`.
    pub fn insert(&mut self, filter: &str, value: T) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => {
                    node.hash.push(value);
                    return;
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                l => node.literal.entry(l.into()).or_default(),
            };
        }
        node.exact.push(value);
    }

    /// Calls `f` with the value of every filter that matches `topic`. A value inserted
    /// under several matching filters is visited once per filter.
    pub fn for_each_match<'s>(&'s self, topic: &str, mut f: impl FnMut(&'s T)) {
        let mut levels = topic.split('/');
        let first = levels.next().unwrap_or("");
        let root = &self.root;
        if !topic.starts_with('$') {
            root.hash.iter().for_each(&mut f);
            if let Some(p) = &root.plus {
                visit(p, levels.clone(), &mut f);
            }
        }
        if let Some(n) = root.literal.get(first) {
            visit(n, levels, &mut f);
        }
    }
}

fn visit<'s, T>(node: &'s Node<T>, mut rest: std::str::Split<'_, char>, f: &mut impl FnMut(&'s T)) {
    // `a/#` matches `a` itself too.
    node.hash.iter().for_each(&mut *f);
    let Some(level) = rest.next() else {
        node.exact.iter().for_each(f);
        return;
    };
    if let Some(p) = &node.plus {
        visit(p, rest.clone(), f);
    }
    if let Some(n) = node.literal.get(level) {
        visit(n, rest, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cases from MQTT 3.1.1 section 4.7.1 and 4.7.2 (non-normative examples).
    const CASES: &[(&str, &str, bool)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("#", "sport/tennis", true),
        ("#", "/", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/tournament", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("+", "finance", true),
        ("+/tennis/#", "sport/tennis", true),
        ("a/b", "a/b", true),
        ("a/b", "a/b/c", false),
        ("a/b", "A/b", false),
        ("a//b", "a//b", true),
        ("a/+/b", "a//b", true),
        // `$` topics (4.7.2).
        ("#", "$SYS/broker", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        (
            "$events/client_disconnected",
            "$events/client_disconnected",
            true,
        ),
        ("a/$x", "a/$x", true),
        ("a/+", "a/$x", true),
    ];

    #[test]
    fn matches_spec_examples() {
        for &(filter, topic, want) in CASES {
            validate_filter(filter).unwrap();
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn index_agrees_with_matches() {
        let mut index = TopicIndex::new();
        for (i, &(filter, _, _)) in CASES.iter().enumerate() {
            index.insert(filter, i);
        }
        for &(_, topic, _) in CASES {
            let mut got = Vec::new();
            index.for_each_match(topic, |&i| got.push(i));
            got.sort();
            let want: Vec<usize> = (0..CASES.len())
                .filter(|&i| matches(CASES[i].0, topic))
                .collect();
            assert_eq!(got, want, "topic {topic}");
        }
    }

    #[test]
    fn invalid_filters() {
        assert_eq!(validate_filter(""), Err(FilterError::Empty));
        assert_eq!(validate_filter("a/#/b"), Err(FilterError::HashNotLast));
        assert_eq!(validate_filter("a#"), Err(FilterError::HashNotLast));
        assert_eq!(
            validate_filter("sport/tennis#"),
            Err(FilterError::HashNotLast)
        );
        assert_eq!(
            validate_filter("sport+"),
            Err(FilterError::PlusNotWholeLevel)
        );
        assert_eq!(
            validate_filter("a/b+/c"),
            Err(FilterError::PlusNotWholeLevel)
        );
        assert_eq!(validate_filter("a\0"), Err(FilterError::Nul));
        assert_eq!(
            validate_filter(&"a".repeat(70000)),
            Err(FilterError::TooLong)
        );
        for ok in ["#", "+", "/", "+/+/#", "$SYS/#", "a//b"] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn covering() {
        assert!(covers("#", "a/b"));
        assert!(covers("#", "+/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/x"));
        assert!(!covers("+/x", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x"));
        assert!(!covers("a/+", "+/b"));
    }

    #[test]
    fn minimal_cover_drops_redundant_filters() {
        assert_eq!(
            minimal_cover(["store-last-message/+", "#", "a/b", "a/b"]),
            vec!["#"]
        );
        assert_eq!(
            minimal_cover(["a/+", "+/b", "a/b", "$SYS/#"]),
            vec!["$SYS/#", "+/b", "a/+"]
        );
    }
}
