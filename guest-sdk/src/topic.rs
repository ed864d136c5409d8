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

/// Whether `topic` matches `filter` with MQTT's rules (`+` one level, `#` the rest,
/// no wildcard first level for `$` topics); `wasmrule-topic`'s, as the runtime's.
///
/// ```
/// use wasmrule_guest::topic::matches;
/// assert!(matches("sensors/+/temp", "sensors/hall/temp"));
/// assert!(!matches("#", "$SYS/uptime"));
/// ```
pub use wasmrule_topic::matches;

#[cfg(test)]
mod tests {
    use super::is_valid_filter;

    /// The grammar itself is tested in `wasmrule-topic`; this only pins the re-export.
    #[test]
    fn the_sdk_uses_the_shared_grammar() {
        assert!(is_valid_filter("store-last-message/+"));
        assert!(!is_valid_filter("a/#/b"));
    }
}
