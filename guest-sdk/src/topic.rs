//! MQTT topic filters as a rule declares them.
//!
//! The `#[rule]` macro checks filters at compile time with the same rules; the runtime
//! checks them again at load, since a module may come from any language.

/// Whether `filter` is a valid MQTT topic filter: not empty, `#` only as the whole last
/// level, `+` only as a whole level, no NUL. EMQX event topics (`$events/...`) are
/// filters too.
///
/// # Examples
///
/// ```
/// use wasmrule_guest::topic::is_valid_filter;
/// assert!(is_valid_filter("store-last-message/+"));
/// assert!(is_valid_filter("#"));
/// assert!(!is_valid_filter("a/#/b"));
/// assert!(!is_valid_filter("a/b+"));
/// ```
pub const fn is_valid_filter(filter: &str) -> bool {
    let b = filter.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let start_of_level = i == 0 || b[i - 1] == b'/';
        let end_of_level = i + 1 == b.len() || b[i + 1] == b'/';
        match b[i] {
            0 => return false,
            b'+' if !(start_of_level && end_of_level) => return false,
            b'#' if !(start_of_level && i + 1 == b.len()) => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::is_valid_filter;

    #[test]
    fn filter_validity() {
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
            "$events/client_disconnected",
        ] {
            assert!(is_valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "#a", "a+", "+a/b", "a/b#", "a\0b"] {
            assert!(!is_valid_filter(bad), "{bad:?}");
        }
    }
}
