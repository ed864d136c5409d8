//! MQTT topic filters: validation, matching, covering, and an index from filters to
//! values that matches a topic in time proportional to its depth, not to the number of
//! filters.
//!
//! Semantics follow MQTT 3.1.1 section 4.7 and MQTT 5 section 4.7: `+` matches exactly
//! one level (possibly empty), `#` matches the parent level and any number of child
//! levels, and topics starting with `$` are not matched by a filter whose first level is
//! a wildcard.

use std::collections::HashMap;

/// Why a topic filter is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a topic filter cannot be empty")]
    Empty,
    #[error("a topic filter cannot contain NUL")]
    Nul,
    #[error("`+` must be a whole level (`a/+/b`, not `a+`)")]
    PlusNotWholeLevel,
    #[error("`#` must be the whole last level (`a/#`, not `a/#/b` or `a#`)")]
    HashNotLast,
    #[error("a topic filter is at most 65535 bytes")]
    TooLong,
}

/// Checks that `filter` is a valid MQTT topic filter.
///
/// # Errors
///
/// The first rule the filter breaks.
pub fn validate_filter(filter: &str) -> Result<(), FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.len() > u16::MAX as usize {
        return Err(FilterError::TooLong);
    }
    if filter.contains('\0') {
        return Err(FilterError::Nul);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            "#" => return Err(FilterError::HashNotLast),
            l if l.contains('#') => return Err(FilterError::HashNotLast),
            l if l.contains('+') => return Err(FilterError::PlusNotWholeLevel),
            _ => {}
        }
    }
    Ok(())
}

/// Whether the (valid) `filter` matches the concrete `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic matched by `narrow` is also matched by `wide` (both valid
/// filters). Used to keep the broker subscription set free of redundant filters.
pub fn covers(wide: &str, narrow: &str) -> bool {
    // `$` topics: a leading wildcard in `wide` matches none of them.
    let narrow_dollar = narrow.starts_with('$');
    if narrow_dollar && (wide.starts_with('+') || wide.starts_with('#')) {
        return false;
    }
    let mut w = wide.split('/');
    let mut n = narrow.split('/');
    loop {
        match (w.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
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
    len: usize,
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
            len: 0,
        }
    }
}

impl<T> TopicIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (filter, value) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under the (valid) `filter`.
    pub fn insert(&mut self, filter: &str, value: T) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => {
                    node.hash.push(value);
                    self.len += 1;
                    return;
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                l => node.literal.entry(l.into()).or_default(),
            };
        }
        node.exact.push(value);
        self.len += 1;
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
