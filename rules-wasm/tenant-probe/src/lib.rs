//! `tenant-probe` (rule ABI v2): a rule that tries, on purpose, to reach beyond its
//! tenant, for the hostile tests. On `acme/probe/<what>` it does one thing and
//! records what happened under `probe:<what>` (its own namespace). It is written
//! for tenant `acme` (`rules/acme/`):
//!
//! - `scan`: reads `SCAN 0` and `KEYS beta:*` (never in the read set);
//! - `get`: reads `GET beta:secret` (namespaced: it reads its own `beta:secret`);
//! - `hashtag`: reads `GET {beta}secret` (the prefix still comes first);
//! - `publish`: publishes to `beta/x` (outside its topics);
//! - `subscribe`: subscribes client `beta-device` to its own topics;
//! - `readbomb`: reads in a loop until a read fails, records how many succeeded and why
//!   the next failed;
//! - `hugereply`: reads `HGETALL big` (the test makes it larger than the budget);
//! - `actionbomb`: returns 5,000 publishes (more than `limits.max_commands`);
//! - `ok`: publishes `acme/probe-done`, inside its topics.
//!
//! For `publish` and `subscribe` the host refuses the whole output, so nothing is
//! recorded and the event becomes a dead letter.

use wasmrule_guest::{Action, Context, Event, ReadError, RuleError, Value, action, cmd, rule};

fn show(r: Result<Value, ReadError>) -> String {
    match r {
        Ok(v) if v.is_nil() => "nil".to_owned(),
        Ok(v) => v.as_str().unwrap_or("?").to_owned(),
        Err(e) => e.name().to_owned(),
    }
}

#[rule(filters = ["acme/probe/+"])]
pub fn tenant_probe(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let what = event.topic_last_level().unwrap_or_default();
    let tenant = event.topic().split('/').next().unwrap_or_default();
    let record = |s: String| -> Action { cmd::set(format!("probe:{what}"), s).into() };
    Ok(match what {
        "scan" => {
            let scan = show(ctx.read(&["SCAN", "0"]));
            let keys = show(ctx.read(&["KEYS", "beta:*"]));
            vec![record(format!("{scan} {keys}"))]
        }
        "get" => vec![record(show(ctx.get("beta:secret")))],
        "hashtag" => vec![record(show(ctx.get("{beta}secret")))],
        "publish" => vec![
            record("published".into()),
            action::publish("beta/x", "leak").qos(1).into(),
        ],
        "subscribe" => vec![
            record("subscribed".into()),
            action::subscribe("beta-device", format!("{tenant}/#"), 1),
        ],
        "readbomb" => {
            let mut n = 0;
            let why = loop {
                match ctx.get("some-key") {
                    Ok(_) => n += 1,
                    Err(e) => break e.name(),
                }
            };
            vec![record(format!("{n} {why}"))]
        }
        "hugereply" => vec![record(show(ctx.hgetall("big")))],
        "actionbomb" => (0..5000)
            .map(|i| action::publish(format!("{tenant}/bomb/{i}"), "x").into())
            .collect(),
        "ok" => vec![
            action::publish(format!("{tenant}/probe-done"), "done")
                .qos(1)
                .into(),
        ],
        other => return Err(RuleError::new(format!("unknown probe {other:?}"))),
    })
}
