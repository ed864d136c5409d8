//! Checks every stage's settings use: a value that must be positive, a QoS. Below every
//! stage's `config.rs`, so that none of them imports another.

use anyhow::bail;

/// `v` if it is greater than zero; else an error naming `key`.
///
/// # Errors
///
/// When `v` is zero (or below).
pub(crate) fn positive<T: PartialOrd + Default + std::fmt::Display>(
    v: T,
    key: &str,
) -> anyhow::Result<T> {
    if v > T::default() {
        Ok(v)
    } else {
        bail!("{key}: must be greater than 0, got {v}")
    }
}

/// `qos` if it is 0, 1 or 2.
///
/// # Errors
///
/// When it is above 2.
pub(crate) fn check_qos(qos: u8) -> anyhow::Result<u8> {
    if qos <= 2 {
        Ok(qos)
    } else {
        bail!("QoS {qos} is not 0, 1 or 2")
    }
}
