//! Redis commands produced by rules, stored flat: one byte buffer for all arguments and
//! two index vectors, so a batch of thousands of commands costs a handful of allocations.
//!
//! This file owns the representation and its `redis-cli` rendering; decoding from guest
//! memory lives in `engine/abi.rs`, sending to Redis in `sink/redis/`.

use std::fmt;
use std::ops::Range;

/// A list of commands with binary-safe arguments.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Commands {
    data: Vec<u8>,
    // Byte range of each argument in `data`.
    args: Vec<Range<u32>>,
    // Range of each command in `args`.
    cmds: Vec<Range<u32>>,
}

/// A position in a [`Commands`], to roll back to with [`Commands::truncate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    data: usize,
    args: usize,
    cmds: usize,
}

impl Commands {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    /// Whether there are no commands.
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Total bytes of all arguments.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Removes every command, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.args.clear();
        self.cmds.clear();
    }

    /// The current end, for [`Commands::truncate`].
    pub fn mark(&self) -> Mark {
        Mark {
            data: self.data.len(),
            args: self.args.len(),
            cmds: self.cmds.len(),
        }
    }

    /// Drops everything pushed since `mark`.
    pub fn truncate(&mut self, mark: Mark) {
        self.data.truncate(mark.data);
        self.args.truncate(mark.args);
        self.cmds.truncate(mark.cmds);
    }

    /// Starts a new command; arguments follow with [`Commands::push_arg`].
    pub fn begin_command(&mut self) {
        let at = self.args.len() as u32;
        self.cmds.push(at..at);
    }

    /// Appends an argument to the command begun last.
    ///
    /// # Panics
    ///
    /// If no command was begun.
    pub fn push_arg(&mut self, arg: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(arg);
        self.args.push(start..self.data.len() as u32);
        let cmd = self.cmds.last_mut().expect("push_arg before begin_command");
        cmd.end += 1;
    }

    /// Appends `prefix` followed by `arg` as one argument to the command begun last.
    ///
    /// # Panics
    ///
    /// If no command was begun.
    pub fn push_prefixed_arg(&mut self, prefix: &[u8], arg: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(prefix);
        self.data.extend_from_slice(arg);
        self.args.push(start..self.data.len() as u32);
        let cmd = self
            .cmds
            .last_mut()
            .expect("push_prefixed_arg before begin_command");
        cmd.end += 1;
    }

    /// Appends a whole command.
    pub fn push<A: AsRef<[u8]>>(&mut self, args: impl IntoIterator<Item = A>) {
        self.begin_command();
        for a in args {
            self.push_arg(a.as_ref());
        }
    }

    /// Appends all commands of `other`.
    pub fn extend_from(&mut self, other: &Commands) {
        for c in other.iter() {
            self.push(c.args());
        }
    }

    /// The commands in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = CommandRef<'_>> + '_ {
        self.cmds.iter().map(move |r| CommandRef {
            all: self,
            args: r.clone(),
        })
    }

    /// Command `i`.
    pub fn get(&self, i: usize) -> Option<CommandRef<'_>> {
        self.cmds.get(i).map(|r| CommandRef {
            all: self,
            args: r.clone(),
        })
    }
}

/// One command in a [`Commands`].
#[derive(Clone)]
pub struct CommandRef<'a> {
    all: &'a Commands,
    args: Range<u32>,
}

impl<'a> CommandRef<'a> {
    /// Name and arguments in order.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + Clone + use<'a> {
        let all = self.all;
        all.args[self.args.start as usize..self.args.end as usize]
            .iter()
            .map(move |r| &all.data[r.start as usize..r.end as usize])
    }

    /// The command name as the rule wrote it.
    pub fn name(&self) -> &'a [u8] {
        self.args().next().unwrap_or_default()
    }
}

/// `redis-cli` syntax: words as they are, anything with spaces, quotes or bytes outside
/// printable ASCII in double quotes with `\n`, `\r`, `\t`, `\"`, `\\` and `\xHH` escapes.
impl fmt::Display for CommandRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.args().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write_cli_arg(f, arg)?;
        }
        Ok(())
    }
}

impl fmt::Debug for CommandRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Debug for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Writes one argument the way `redis-cli` reads it back.
pub fn write_cli_arg(f: &mut impl fmt::Write, arg: &[u8]) -> fmt::Result {
    let plain = !arg.is_empty()
        && arg
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'));
    if plain {
        for &b in arg {
            f.write_char(b as char)?;
        }
        return Ok(());
    }
    f.write_char('"')?;
    for &b in arg {
        match b {
            b'"' => f.write_str("\\\"")?,
            b'\\' => f.write_str("\\\\")?,
            b'\n' => f.write_str("\\n")?,
            b'\r' => f.write_str("\\r")?,
            b'\t' => f.write_str("\\t")?,
            0x20..=0x7e => f.write_char(b as char)?,
            _ => write!(f, "\\x{b:02x}")?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_iterate_truncate() {
        let mut c = Commands::new();
        c.push(["HSET", "k", "f", "v"]);
        let m = c.mark();
        c.push([&b"SET"[..], b"bin\x00\xff", b""]);
        assert_eq!(c.len(), 2);
        let second: Vec<&[u8]> = c.get(1).unwrap().args().collect();
        assert_eq!(second, vec![&b"SET"[..], b"bin\x00\xff", b""]);
        c.truncate(m);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(0).unwrap().to_string(), "HSET k f v");
    }

    #[test]
    fn cli_quoting() {
        let mut c = Commands::new();
        c.push([&b"SET"[..], b"a b", b"", b"\r\n\x01", b"q\"'\\"]);
        assert_eq!(
            c.get(0).unwrap().to_string(),
            r#"SET "a b" "" "\r\n\x01" "q\"'\\""#
        );
    }
}
