//! A [`RedisReads`] that answers a rule's reads from reads recorded earlier on the same
//! event: by `wasmrule replay` (the recording's), and for a canary (the live version's,
//! so that both versions see the same Redis). A read that was recorded is answered with
//! what it got then, each recorded read at most once, in order; one that was not goes
//! to the fallback port when there is one (a live Redis), or is `unavailable`.

use std::time::Duration;

use super::ReadEntry;
use crate::rules::engine::{ReadCode, RedisReads, Reply};

/// Reads answered from a recording first.
pub struct RecordedReads {
    entries: Vec<ReadEntry>,
    used: Vec<bool>,
    fallback: Option<Box<dyn RedisReads>>,
    /// Reads that were not in the recording.
    pub missed: u32,
}

impl RecordedReads {
    /// Answers from `entries`, then from `fallback`.
    pub fn new(entries: Vec<ReadEntry>, fallback: Option<Box<dyn RedisReads>>) -> Self {
        RecordedReads {
            used: vec![false; entries.len()],
            entries,
            fallback,
            missed: 0,
        }
    }

    /// The fallback port back, for its owner to reuse.
    pub fn into_fallback(self) -> Option<Box<dyn RedisReads>> {
        self.fallback
    }
}

impl RedisReads for RecordedReads {
    fn read(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
        max_reply: usize,
    ) -> Result<Reply, ReadCode> {
        let found = self.entries.iter().enumerate().position(|(i, e)| {
            !self.used[i]
                && e.request.len() == args.len()
                && e.request.iter().zip(args).all(|(a, b)| a == b)
        });
        if let Some(i) = found {
            self.used[i] = true;
            return self.entries[i].reply.clone();
        }
        self.missed += 1;
        match &mut self.fallback {
            Some(port) => port.read(args, timeout, max_reply),
            None => Err(ReadCode::Unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(args: &[&str], reply: Reply) -> ReadEntry {
        ReadEntry {
            request: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            reply: Ok(reply),
        }
    }

    #[test]
    fn recorded_reads_are_answered_once_each_in_order() {
        let mut r = RecordedReads::new(
            vec![
                entry(&["GET", "a"], Reply::Int(1)),
                entry(&["GET", "a"], Reply::Int(2)),
            ],
            None,
        );
        let t = Duration::from_millis(1);
        assert_eq!(r.read(&[b"GET", b"a"], t, 100), Ok(Reply::Int(1)));
        assert_eq!(r.read(&[b"GET", b"a"], t, 100), Ok(Reply::Int(2)));
        assert_eq!(r.read(&[b"GET", b"a"], t, 100), Err(ReadCode::Unavailable));
        assert_eq!(r.read(&[b"GET", b"b"], t, 100), Err(ReadCode::Unavailable));
        assert_eq!(r.missed, 2);
    }
}
