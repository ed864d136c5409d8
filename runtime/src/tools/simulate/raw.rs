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

/// DISCONNECT, reason 0 (normal).
pub fn disconnect() -> Vec<u8> {
    packet(0xe0, &[0, 0])
}

/// A raw MQTT 5 connection.
pub struct RawClient {
    stream: TcpStream,
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
        let mut head = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
            .await
            .context("no CONNACK within 5 s")??;
        if head[0] != 0x20 {
            bail!("expected CONNACK, got packet type {:#x}", head[0] >> 4);
        }
        let mut rest = vec![0u8; head[1] as usize];
        stream.read_exact(&mut rest).await?;
        if rest.get(1).copied().unwrap_or(0xff) != 0 {
            bail!("connection refused, reason code {:#x}", rest[1]);
        }
        Ok(RawClient { stream })
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
}
