//! `[redis.spill]`: the write-ahead spill's directory and bounds. The section as
//! written ([`RawSpill`]), its defaults and checks, and the validated [`SpillConfig`]
//! that `SpillLog::open` (`log.rs`) takes.

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

/// The write-ahead spill (`[redis.spill]`, docs/delivery.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillConfig {
    /// Directory of the segment files; created if missing; one wasmrule per directory.
    pub dir: PathBuf,
    /// Most bytes the segment files may take together.
    pub max_bytes: u64,
    /// Size at which a segment is closed and a new one started; replayed space is
    /// reclaimed a segment at a time.
    pub segment_bytes: u64,
}

/// Defaults of `[redis.spill]`: 256 MiB in all (EMQX's default buffer for its Redis
/// sink is the same size), in 16 MiB segments.
pub const DEFAULT_SPILL_MAX_BYTES: u64 = 256 << 20;
pub const DEFAULT_SPILL_SEGMENT_BYTES: u64 = 16 << 20;
/// Bounds of `segment_bytes`: a segment holds many batches, and a replayed one is
/// deleted soon enough for its space to matter.
const SPILL_SEGMENT_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

/// `[redis.spill]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpill {
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
    segment_bytes: Option<u64>,
}

impl RawSpill {
    /// Validates the section and fills in defaults.
    pub(crate) fn build(self) -> anyhow::Result<SpillConfig> {
        let dir = match self.dir {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => bail!(
                "redis.spill.dir: required to turn the spill on (a directory for it); \
                 leave out [redis.spill] to keep it off"
            ),
        };
        let segment_bytes = self.segment_bytes.unwrap_or(DEFAULT_SPILL_SEGMENT_BYTES);
        if !SPILL_SEGMENT_RANGE.contains(&segment_bytes) {
            bail!(
                "redis.spill.segment_bytes: {segment_bytes} is outside {}..={}",
                SPILL_SEGMENT_RANGE.start(),
                SPILL_SEGMENT_RANGE.end()
            );
        }
        let max_bytes = self
            .max_bytes
            .unwrap_or(DEFAULT_SPILL_MAX_BYTES.max(segment_bytes));
        if max_bytes < segment_bytes {
            bail!(
                "redis.spill.max_bytes: {max_bytes} is less than redis.spill.segment_bytes ({segment_bytes})"
            );
        }
        Ok(SpillConfig {
            dir,
            max_bytes,
            segment_bytes,
        })
    }
}
