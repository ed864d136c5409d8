//! Comparing two outputs of the same event: the recorded (or live) one and the replayed
//! (or canary) one. Commands are compared in order, position by position, and so are
//! actions; what differs is reported per command name, so that a summary can say "HSET:
//! 4,812 changed" and show examples.

use super::Output;

/// One place where two outputs differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What is counted: the command name in capitals (`HSET`), `MQTT PUBLISH` (and the
    /// other action kinds), or `ERROR`.
    pub name: String,
    /// The line in the first output, if it has one at this place.
    pub before: Option<String>,
    /// The line in the second output, if it has one at this place.
    pub after: Option<String>,
}

/// Where `after` differs from `before`; empty when they are the same.
pub fn compare(before: &Output, after: &Output) -> Vec<Change> {
    let mut changes = Vec::new();
    if before == after {
        return changes;
    }
    let n = before.commands.len().max(after.commands.len());
    for i in 0..n {
        let b = before.commands.get(i);
        let a = after.commands.get(i);
        let same = match (&b, &a) {
            (Some(b), Some(a)) => b.args().eq(a.args()),
            _ => false,
        };
        if same {
            continue;
        }
        let name = b.as_ref().or(a.as_ref()).map_or_else(String::new, |c| {
            String::from_utf8_lossy(c.name()).to_ascii_uppercase()
        });
        changes.push(Change {
            name,
            before: b.map(|c| c.to_string()),
            after: a.map(|c| c.to_string()),
        });
    }
    let n = before.actions.len().max(after.actions.len());
    for i in 0..n {
        let b = before.actions.get(i);
        let a = after.actions.get(i);
        if b == a {
            continue;
        }
        let kind = b.or(a).map_or("", |x| x.kind());
        changes.push(Change {
            name: format!("MQTT {}", kind.to_ascii_uppercase()),
            before: b.map(ToString::to_string),
            after: a.map(ToString::to_string),
        });
    }
    if before.error != after.error {
        changes.push(Change {
            name: "ERROR".to_owned(),
            before: before.error.as_ref().map(|k| format!("ERROR {k}")),
            after: after.error.as_ref().map(|k| format!("ERROR {k}")),
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Commands;

    fn out(cmds: &[&[&str]]) -> Output {
        let mut commands = Commands::new();
        for c in cmds {
            commands.push(c.iter());
        }
        Output {
            commands,
            ..Output::default()
        }
    }

    #[test]
    fn same_outputs_have_no_changes() {
        let a = out(&[&["HSET", "k", "f", "1"]]);
        assert!(compare(&a, &a.clone()).is_empty());
    }

    #[test]
    fn changes_are_named_by_command_and_position() {
        let a = out(&[&["HSET", "k", "t", "21.37"], &["INCR", "n"]]);
        let b = out(&[
            &["hset", "k", "t", "21.4"],
            &["INCR", "n"],
            &["SET", "x", "1"],
        ]);
        let c = compare(&a, &b);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "HSET");
        assert_eq!(c[0].before.as_deref(), Some("HSET k t 21.37"));
        assert_eq!(c[0].after.as_deref(), Some("hset k t 21.4"));
        assert_eq!(c[1].name, "SET");
        assert_eq!(c[1].before, None);
    }

    #[test]
    fn a_failure_against_commands_is_a_change() {
        let a = out(&[&["SET", "k", "1"]]);
        let b = Output {
            error: Some("trap".into()),
            ..Output::default()
        };
        let names: Vec<String> = compare(&a, &b).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["SET", "ERROR"]);
    }
}
