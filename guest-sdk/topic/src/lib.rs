//! The MQTT topic-filter grammar, written once for the runtime (which checks a rule's
//! filters at load and matches topics against them), the guest SDK (`topic` module)
//! and its `#[rule]` macro (which checks filters at compile time).
//!
//! Semantics follow MQTT 3.1.1 section 4.7 and MQTT 5 section 4.7: `+` matches exactly
//! one level (possibly empty), `#` matches the parent level and any number of child
//! levels, and topics starting with `$` are not matched by a filter whose first level is
//! a wildcard.
//!
//! `no_std` and without dependencies, so that it builds for every target a rule does.
//! Not here: the filter index and covering sets the runtime keeps (`runtime/src/topic.rs`).

#![no_std]

/// The longest topic filter MQTT can carry (a two-byte length prefix).
pub const MAX_FILTER_BYTES: usize = u16::MAX as usize;

/// Why a topic filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterError {
    Empty,
    Nul,
    PlusNotWholeLevel,
    HashNotLast,
    TooLong,
}

impl core::fmt::Display for FilterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FilterError::Empty => "a topic filter cannot be empty",
            FilterError::Nul => "a topic filter cannot contain NUL",
            FilterError::PlusNotWholeLevel => "`+` must be a whole level (`a/+/b`, not `a+`)",
            FilterError::HashNotLast => {
                "`#` must be the whole last level (`a/#`, not `a/#/b` or `a#`)"
            }
            FilterError::TooLong => "a topic filter is at most 65535 bytes",
        })
    }
}

impl core::error::Error for FilterError {}

/// Checks the grammar of a topic filter: not empty, no NUL, `+` only as a whole level,
/// `#` only as the whole last level. The length limit ([`MAX_FILTER_BYTES`]) is the
/// protocol's and checked by whoever sends the filter (the runtime, at load).
///
/// # Errors
///
/// The first rule the filter breaks: empty, then NUL anywhere, then the levels from
/// the left.
pub const fn check_filter(filter: &str) -> Result<(), FilterError> {
    let b = filter.as_bytes();
    if b.is_empty() {
        return Err(FilterError::Empty);
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0 {
            return Err(FilterError::Nul);
        }
        i += 1;
    }
    let mut start = 0;
    while start <= b.len() {
        let mut end = start;
        let (mut hash, mut plus) = (false, false);
        while end < b.len() && b[end] != b'/' {
            hash |= b[end] == b'#';
            plus |= b[end] == b'+';
            end += 1;
        }
        let whole = end - start == 1;
        if whole && (b[start] == b'+' || (b[start] == b'#' && end == b.len())) {
            // `+` anywhere, `#` last: fine.
        } else if hash {
            return Err(FilterError::HashNotLast);
        } else if plus {
            return Err(FilterError::PlusNotWholeLevel);
        }
        start = end + 1;
    }
    Ok(())
}

/// Whether `filter` is a valid topic filter by [`check_filter`]. EMQX event topics
/// (`$events/...`) are filters too.
///
/// # Examples
///
/// ```
/// use wasmrule_topic::is_valid_filter;
/// assert!(is_valid_filter("store-last-message/+"));
/// assert!(is_valid_filter("#"));
/// assert!(!is_valid_filter("a/#/b"));
/// assert!(!is_valid_filter("a/b+"));
/// ```
pub const fn is_valid_filter(filter: &str) -> bool {
    check_filter(filter).is_ok()
}

/// Whether the (valid) `filter` matches the concrete `topic`.
///
/// # Examples
///
/// ```
/// use wasmrule_topic::matches;
/// assert!(matches("sensors/+/temp", "sensors/hall/temp"));
/// assert!(matches("sensors/#", "sensors"));
/// assert!(!matches("#", "$SYS/uptime"));
/// ```
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
/// filters).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "a",
            "a/b",
            "+",
            "+/+",
            "/",
            "a//b",
            "#",
            "a/#",
            "+/#",
            "a/",
            "$events/client_disconnected",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", FilterError::Empty),
            ("a\0b", FilterError::Nul),
            ("a+/\0", FilterError::Nul),
            ("a/#/b", FilterError::HashNotLast),
            ("a#", FilterError::HashNotLast),
            ("#a", FilterError::HashNotLast),
            ("a/b#", FilterError::HashNotLast),
            ("a+#", FilterError::HashNotLast),
            ("a+", FilterError::PlusNotWholeLevel),
            ("+a/b", FilterError::PlusNotWholeLevel),
            ("a+/#/b", FilterError::PlusNotWholeLevel),
        ] {
            assert_eq!(check_filter(bad), Err(why), "{bad:?}");
            assert!(!is_valid_filter(bad));
        }
    }

    // Usable where the macro and the guest need it: in a constant.
    const _: () = assert!(is_valid_filter("a/+/#"));
}
