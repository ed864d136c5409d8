//! The event JSON the runtime hands to rules: for any topic, payload and MQTT 5
//! properties it is valid JSON, and `topic` and `payload` round-trip exactly.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use wasmrule::{EventEncoder, Message, PublishProperties};

#[derive(Arbitrary, Debug)]
struct Input {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
    clientid: Option<String>,
    content_type: Option<String>,
    correlation: Option<Vec<u8>>,
    user_properties: Vec<(String, String)>,
}

fuzz_target!(|i: Input| {
    let mut m = Message::new(i.topic.clone(), i.payload.clone(), i.qos % 3, i.retain);
    m.clientid = i.clientid.clone();
    if i.content_type.is_some() || i.correlation.is_some() || !i.user_properties.is_empty() {
        m.properties = Some(Box::new(PublishProperties {
            content_type: i.content_type,
            correlation_data: i.correlation.map(Into::into),
            user_properties: i.user_properties,
            ..Default::default()
        }));
    }
    let mut out = Vec::new();
    EventEncoder::new("wasmrule@fuzz").publish_event(&m, &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("event is valid JSON");
    assert_eq!(v["topic"].as_str(), Some(i.topic.as_str()));
    assert_eq!(v["clientid"].as_str(), i.clientid.as_deref());
    let payload = v["payload"].as_str().unwrap();
    let bytes = match v["payload_encoding"].as_str() {
        Some("utf8") => payload.as_bytes().to_vec(),
        Some("base64") => base64::engine::general_purpose::STANDARD.decode(payload).unwrap(),
        other => panic!("payload_encoding {other:?}"),
    };
    assert_eq!(bytes, i.payload);
});
