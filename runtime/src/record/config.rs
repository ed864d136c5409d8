//! `[record]`: where `wasmrule run` records what its rules see and do (docs/replay.md),
//! and how much it keeps. Off unless `record.dir` or `--record DIR` is given.

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

/// Bytes a recording keeps by default before it deletes its oldest segment.
pub const DEFAULT_RECORD_MAX_BYTES: u64 = 1 << 30;
/// Bytes of a segment file by default.
pub const DEFAULT_RECORD_SEGMENT_BYTES: u64 = 64 << 20;

/// Where and how much to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    pub dir: PathBuf,
    /// The directory's segments together; the oldest go first.
    pub max_bytes: u64,
    /// A segment is closed and a new one begun past this size.
    pub segment_bytes: u64,
}

impl RecordConfig {
    /// Recording into `dir` with the default bounds.
    pub fn new(dir: impl Into<PathBuf>) -> RecordConfig {
        RecordConfig {
            dir: dir.into(),
            max_bytes: DEFAULT_RECORD_MAX_BYTES,
            segment_bytes: DEFAULT_RECORD_SEGMENT_BYTES,
        }
    }
}

/// `[record]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecord {
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
    segment_bytes: Option<u64>,
}

impl RawRecord {
    /// The recording, if `dir` is set; bounds checked.
    pub(crate) fn build(
        self,
        dir_override: Option<PathBuf>,
    ) -> anyhow::Result<Option<RecordConfig>> {
        let Some(dir) = dir_override.or(self.dir) else {
            return Ok(None);
        };
        let mut c = RecordConfig::new(dir);
        c.max_bytes = self.max_bytes.unwrap_or(c.max_bytes);
        c.segment_bytes = self.segment_bytes.unwrap_or(c.segment_bytes);
        if c.segment_bytes < 4096 {
            bail!("record.segment_bytes: {} is below 4096", c.segment_bytes);
        }
        if c.max_bytes < c.segment_bytes {
            bail!(
                "record.max_bytes: {} is below record.segment_bytes ({})",
                c.max_bytes,
                c.segment_bytes
            );
        }
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(toml: &str, dir: Option<&str>) -> anyhow::Result<Option<RecordConfig>> {
        let raw: RawRecord = toml::from_str(toml).unwrap();
        raw.build(dir.map(PathBuf::from))
    }

    #[test]
    fn the_flag_turns_it_on_and_the_bounds_are_checked() {
        assert_eq!(build("", None).unwrap(), None);
        let c = build("max_bytes = 100000\nsegment_bytes = 5000", Some("/r")).unwrap();
        let c = c.unwrap();
        assert_eq!(
            (c.dir.to_str(), c.max_bytes, c.segment_bytes),
            (Some("/r"), 100_000, 5000)
        );
        let c = build("dir = \"/f\"", None).unwrap().unwrap();
        assert_eq!(c.max_bytes, DEFAULT_RECORD_MAX_BYTES);
        let e = build("segment_bytes = 10", Some("/r"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("record.segment_bytes"), "{e}");
        let e = build("max_bytes = 8192\nsegment_bytes = 65536", Some("/r")).unwrap_err();
        assert!(e.to_string().contains("record.max_bytes"), "{e}");
    }
}
