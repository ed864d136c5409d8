//! MQTT topic filters as a rule declares them.
//!
//! The `#[rule]` macro checks filters at compile time with the same grammar
//! (`wasmrule-topic`); the runtime checks them again at load, since a module may come
//! from any language.

/// Whether `filter` is a valid MQTT topic filter: not empty, `#` only as the whole last
/// level, `+` only as a whole level, no NUL. EMQX event topics (`$events/...`) are
/// filters too. The grammar is `wasmrule-topic`'s, which the runtime uses as well.
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
pub use wasmrule_topic::is_valid_filter;

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
