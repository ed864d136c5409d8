//! A few hand-encoded MQTT 5 packets, for the misbehaving clients of the simulator.
//! A well-behaved client library refuses to send what these send (a PUBLISH to a
//! wildcard topic, a frame above the broker's maximum, a QoS the broker does not grant)
//! or to fall silent past its keepalive, so they talk to the broker over a plain TCP
//! stream.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Appends an MQTT variable byte integer.
fn varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    varint(&mut p, body.len());
    p.extend_from_slice(body);
    p
}

/// CONNECT, MQTT 5, clean start, no properties, no credentials.
pub fn connect(client_id: &str, keepalive: u16) -> Vec<u8> {
    let mut b = Vec::new();
    string(&mut b, b"MQTT");
    b.push(5);
    b.push(0x02);
    b.extend_from_slice(&keepalive.to_be_bytes());
    b.push(0); // properties
    string(&mut b, client_id.as_bytes());
    packet(0x10, &b)
}

/// PUBLISH, MQTT 5, no properties; packet id 1 when `qos` > 0.
pub fn publish(topic: &str, payload: &[u8], qos: u8) -> Vec<u8> {
    let mut b = Vec::new();
    string(&mut b, topic.as_bytes());
    if qos > 0 {
        b.extend_from_slice(&1u16.to_be_bytes());
    }
    b.push(0); // properties
    b.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &b)
}

/// A PUBLISH 1 KiB above `max_packet_size`, which a broker with that limit must refuse
/// by closing the connection (`frame_too_large`).
pub fn oversized_publish(max_packet_size: u32) -> Vec<u8> {
    let payload = vec![b'x'; max_packet_size as usize + 1024];
    publish("store-last-message/oversized", &payload, 0)
}

/// DISCONNECT, reason 0 (normal).
pub fn disconnect() -> Vec<u8> {
    packet(0xe0, &[0, 0])
}

/// A raw MQTT 5 connection.
pub struct RawClient {
    stream: TcpStream,
    /// The largest packet the broker accepts, if its CONNACK says (MQTT 5 3.2.2.3.6).
    pub max_packet_size: Option<u32>,
}

impl RawClient {
    /// Connects and waits for a successful CONNACK.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached or refuses the connection.
    pub async fn connect(addr: &str, client_id: &str, keepalive: u16) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.write_all(&connect(client_id, keepalive)).await?;
        let mut first = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut first))
            .await
            .context("no CONNACK within 5 s")??;
        if first[0] != 0x20 {
            bail!("expected CONNACK, got packet type {:#x}", first[0] >> 4);
        }
        // The remaining length, a variable byte integer (a CONNACK with properties can
        // be longer than 127 bytes).
        let mut len = 0usize;
        for shift in [0, 7, 14, 21] {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await?;
            len |= ((b[0] & 0x7f) as usize) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut rest = vec![0u8; len];
        stream.read_exact(&mut rest).await?;
        if rest.get(1).copied().unwrap_or(0xff) != 0 {
            bail!("connection refused, reason code {:#x}", rest[1]);
        }
        let max_packet_size = connack_max_packet_size(&rest);
        Ok(RawClient {
            stream,
            max_packet_size,
        })
    }

    /// Sends bytes as they are.
    ///
    /// # Errors
    ///
    /// When the connection is already closed.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads (and discards) until the broker closes the connection or `limit` passes;
    /// returns whether it closed.
    pub async fn until_closed(&mut self, limit: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let read_all = async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(limit, read_all).await.is_ok()
    }
}

/// The Maximum Packet Size property (0x27) of a CONNACK's variable header (`rest`: flags,
/// reason code, properties), if present and the properties are well-formed.
fn connack_max_packet_size(rest: &[u8]) -> Option<u32> {
    let mut i = 2;
    let (props_len, n) = read_varint(rest.get(i..)?)?;
    i += n;
    let props = rest.get(i..i + props_len)?;
    let mut p = 0;
    while p < props.len() {
        let id = props[p];
        p += 1;
        let fixed = |n: usize| Some(n);
        let string = |at: usize| {
            let len = u16::from_be_bytes(props.get(at..at + 2)?.try_into().ok()?) as usize;
            Some(2 + len)
        };
        let size = match id {
            0x24 | 0x25 | 0x28 | 0x29 | 0x2a => fixed(1),
            0x13 | 0x21 | 0x22 => fixed(2),
            0x11 | 0x27 => fixed(4),
            0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => string(p),
            // User property: two strings.
            0x26 => string(p).and_then(|a| Some(a + string(p + a)?)),
            _ => None,
        }?;
        if id == 0x27 {
            return Some(u32::from_be_bytes(props.get(p..p + 4)?.try_into().ok()?));
        }
        p += size;
    }
    None
}

/// A variable byte integer at the start of `b`, and its length in bytes.
fn read_varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        v |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_encoded_as_the_spec_says() {
        // MQTT 5 3.1: fixed header, "MQTT", level 5, flags, keepalive, props, client id.
        assert_eq!(
            connect("c", 60),
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, b'c'
            ]
        );
        assert_eq!(publish("a", b"x", 0), [0x30, 5, 0, 1, b'a', 0, b'x']);
        assert_eq!(publish("a", b"", 2), [0x34, 6, 0, 1, b'a', 0, 1, 0]);
        let mut v = Vec::new();
        varint(&mut v, 16_384);
        assert_eq!(v, [0x80, 0x80, 0x01]);
        assert_eq!(disconnect(), [0xe0, 2, 0, 0]);
    }

    #[test]
    fn connack_announces_the_maximum_packet_size() {
        // Flags, reason 0, properties: receive maximum 10, assigned client id "ab",
        // a user property ("k", "v"), maximum packet size 16384.
        let mut rest = vec![0, 0];
        let props = [
            &[0x21, 0, 10][..],
            &[0x12, 0, 2, b'a', b'b'],
            &[0x26, 0, 1, b'k', 0, 1, b'v'],
            &[0x27, 0, 0, 0x40, 0],
        ]
        .concat();
        varint(&mut rest, props.len());
        rest.extend_from_slice(&props);
        assert_eq!(connack_max_packet_size(&rest), Some(16_384));
        // None announced; truncated properties.
        assert_eq!(connack_max_packet_size(&[0, 0, 3, 0x21, 0, 10]), None);
        assert_eq!(connack_max_packet_size(&[0, 0, 5, 0x27, 0]), None);
        // Fixed header (1 + a 2-byte length), topic (2 + 28), properties (1), payload.
        assert_eq!(oversized_publish(100).len(), 3 + 30 + 1 + 1124);
    }
}
