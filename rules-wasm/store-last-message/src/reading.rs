//! The demo's reading: the client id (from the event, else the last topic level) and
//! `payload.temp` as the device wrote it (`21.50` stays `21.50`; a string `temp` as its
//! text; anything else is an error).

use serde_json::value::RawValue;
use wasmrule_guest::{Event, RuleError};

#[derive(serde::Deserialize)]
struct Reading<'a> {
    #[serde(borrow)]
    temp: &'a RawValue,
}

/// The client id and the temperature text of `event`.
pub fn client_and_temp<'e>(event: &'e Event) -> Result<(&'e str, String), RuleError> {
    let client = event
        .clientid()
        .or(event.topic_last_level())
        .ok_or("no clientid in the event and no last topic level to use instead")?;
    // serde would also read `[21.5]` into the struct (fields by position): only an
    // object has a `temp`.
    if !event
        .payload_text()
        .is_some_and(|t| t.trim_start().starts_with('{'))
    {
        return Err(RuleError::new("payload is not a JSON object"));
    }
    let reading: Reading = event.payload_json()?;
    let raw = reading.temp.get();
    let temp = match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(raw)?,
        Some(b'-' | b'0'..=b'9') => raw.to_owned(),
        _ => return Err(RuleError::new("payload.temp is not a number or a string")),
    };
    Ok((client, temp))
}
