//! Engine.IO v4 / Socket.IO v5 framing on WebSocket text frames, as much of it as the
//! load driver speaks: the main namespace `/`, JSON payloads, no binary attachments.
//!
//! Over the `websocket` transport each text frame is one Engine.IO packet: a type digit,
//! then its data. Type `4` (message) carries one Socket.IO packet: a type digit, an
//! optional namespace (`/admin,`), an optional ack id (digits), then JSON.
//!
//! | frame | meaning |
//! |---|---|
//! | `0{"sid":..,"pingInterval":..}` | Engine.IO open (server, first frame) |
//! | `2` / `3` | ping (server) / pong (client's answer) |
//! | `40{"token":..}` | Socket.IO CONNECT with its `auth` (client, §3) |
//! | `40{"sid":..}` / `44{"message":..}` | CONNECT accepted / CONNECT_ERROR |
//! | `42<ack>["event",arg]` | EVENT, with an ack id when an answer is wanted |
//! | `43<ack>[arg]` | ACK: the answer to the EVENT with that id |
//!
//! Decoding borrows from the frame: an event's or ack's argument stays a [`RawValue`]
//! slice, so the driver parses it once into the small struct it needs.

use anyhow::{Context, Result, bail};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

/// Engine.IO pong: the client's answer to the server's ping (`2`). In Engine.IO v4 the
/// server pings and closes a session whose pong does not come within `pingTimeout`.
pub const PONG: &str = "3";

/// Socket.IO DISCONNECT from the main namespace: a client leaving politely.
pub const DISCONNECT: &str = "41";

/// One Engine.IO packet received, with the Socket.IO packet it carries.
#[derive(Debug)]
pub enum Packet<'a> {
    /// `0{...}`: the Engine.IO session is open.
    Open(Open),
    /// `1`: the server closes the session.
    Close,
    /// `2`: answer with [`PONG`].
    Ping,
    /// `3` (a pong) or `6` (noop): nothing to do.
    Noop,
    /// `40{"sid":..}`: the Socket.IO CONNECT was accepted.
    Connected,
    /// `41`: the server disconnected this socket from the namespace.
    Disconnect,
    /// `42<ack>["name",arg,..]`: an event, with its first argument (if any). An ack id
    /// the server asks with is skipped: no server event the driver hears wants an answer.
    Event {
        name: Cow<'a, str>,
        arg: Option<&'a RawValue>,
    },
    /// `43<id>[arg,..]`: the answer to the event sent with ack id `id`.
    Ack { id: u64, arg: Option<&'a RawValue> },
    /// `44{"message":..}`: the CONNECT was refused (§3: the message starts with the code).
    ConnectError { message: String },
}

/// The Engine.IO open packet's data (fields the driver does not use are skipped).
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    pub sid: String,
    pub ping_interval: u64,
    pub ping_timeout: u64,
}

/// Decodes one WebSocket text frame.
pub fn decode(frame: &str) -> Result<Packet<'_>> {
    let (kind, data) = split_type(frame).context("a frame without a packet type")?;
    Ok(match kind {
        b'0' => Packet::Open(serde_json::from_str(data).context("the open packet")?),
        b'1' => Packet::Close,
        b'2' => Packet::Ping,
        b'3' | b'6' => Packet::Noop,
        b'4' => {
            decode_socketio(data).with_context(|| format!("Socket.IO packet {}", head(frame)))?
        }
        _ => bail!("unknown Engine.IO packet {}", head(frame)),
    })
}

/// Decodes the Socket.IO packet inside an Engine.IO message (`4`).
fn decode_socketio(packet: &str) -> Result<Packet<'_>> {
    let (kind, rest) = split_type(packet).context("a packet without a type")?;
    if rest.starts_with('/') {
        // The driver only ever connects to `/`, whose packets carry no namespace.
        bail!("a packet of another namespace");
    }
    let (ack, json) = split_ack(rest);
    Ok(match kind {
        b'0' => {
            // Checked, not kept: the driver has no use for the socket's id.
            #[derive(Deserialize)]
            struct Accepted<'a> {
                #[serde(rename = "sid")]
                _sid: &'a str,
            }
            let _: Accepted = serde_json::from_str(json).context("CONNECT reply")?;
            Packet::Connected
        }
        b'1' => Packet::Disconnect,
        b'2' => {
            let Head([name, arg]) = serde_json::from_str(json).context("EVENT arguments")?;
            let name = event_name(name.context("an EVENT without a name")?)?;
            Packet::Event { name, arg }
        }
        b'3' => {
            let id = ack.context("an ACK without an id")?;
            let Head([arg]) = serde_json::from_str(json).context("ACK arguments")?;
            Packet::Ack { id, arg }
        }
        b'4' => {
            #[derive(Deserialize)]
            struct Refused {
                message: String,
            }
            let Refused { message } = serde_json::from_str(json).context("CONNECT_ERROR")?;
            Packet::ConnectError { message }
        }
        b'5' | b'6' => bail!("binary packets are not spoken here"),
        _ => bail!("unknown Socket.IO packet type"),
    })
}

/// `40{"token":..}`: CONNECT to the main namespace with `auth` as its payload (§3).
pub fn connect(auth: &impl Serialize) -> Result<String> {
    let mut out = b"40".to_vec();
    serde_json::to_writer(&mut out, auth)?;
    Ok(String::from_utf8(out)?)
}

/// `42<ack>["name",arg]`: an event with one argument, and an ack id when `ack` is set.
pub fn event(ack: Option<u64>, name: &str, arg: &impl Serialize) -> Result<String> {
    // Room for a chat message's payload, so the buffer is allocated once.
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(b"42");
    if let Some(id) = ack {
        write!(out, "{id}")?;
    }
    out.push(b'[');
    serde_json::to_writer(&mut out, name)?;
    out.push(b',');
    serde_json::to_writer(&mut out, arg)?;
    out.push(b']');
    Ok(String::from_utf8(out)?)
}

/// The leading type digit and the rest.
fn split_type(text: &str) -> Option<(u8, &str)> {
    let kind = *text.as_bytes().first()?;
    // A leading ASCII byte is a whole char, so slicing after it is on a char boundary.
    kind.is_ascii().then(|| (kind, &text[1..]))
}

/// The ack id (leading digits, if any) and the JSON after it.
fn split_ack(text: &str) -> (Option<u64>, &str) {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    (text[..digits].parse().ok(), &text[digits..])
}

/// An event name as text: borrowed unless it holds escapes (no event of §4 does).
fn event_name(raw: &RawValue) -> Result<Cow<'_, str>> {
    let text = raw.get();
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| !t.contains('\\'));
    Ok(match inner {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(serde_json::from_str(text).context("an event name")?),
    })
}

/// The first frame bytes, for error messages (a frame may be kilobytes long).
fn head(frame: &str) -> &str {
    let mut end = frame.len().min(40);
    while !frame.is_char_boundary(end) {
        end -= 1;
    }
    &frame[..end]
}

/// The first `N` elements of a JSON array, as raw slices of the frame; the rest (extra
/// event arguments) are skipped. An array shorter than `N` leaves `None`s.
struct Head<'a, const N: usize>([Option<&'a RawValue>; N]);

impl<'de: 'a, 'a, const N: usize> Deserialize<'de> for Head<'a, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(HeadVisitor::<N>)
    }
}

struct HeadVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for HeadVisitor<N> {
    type Value = Head<'de, N>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut head = [None; N];
        for slot in &mut head {
            match seq.next_element::<&'de RawValue>()? {
                Some(value) => *slot = Some(value),
                None => return Ok(Head(head)),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Head(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(raw: Option<&RawValue>) -> serde_json::Value {
        serde_json::from_str(raw.expect("an argument").get()).expect("JSON")
    }

    #[test]
    fn an_event_with_an_ack_id_round_trips() {
        let arg = json!({"conversationId": "c", "content": "say \"hi\" ]", "n": [1, [2]]});
        let frame = event(Some(17), "message", &arg).expect("encodes");
        assert_eq!(
            frame,
            r#"4217["message",{"content":"say \"hi\" ]","conversationId":"c","n":[1,[2]]}]"#
        );
        let Packet::Event { name, arg: got } = decode(&frame).expect("decodes") else {
            panic!("not an event: {frame}");
        };
        assert_eq!(name, "message");
        assert!(matches!(name, Cow::Borrowed(_)), "a plain name is borrowed");
        assert_eq!(json_of(got), arg);
    }

    #[test]
    fn an_event_without_an_ack_id_and_with_extra_arguments() {
        let frame = r#"42["message_delivered",{"seq":3},"extra",[1,2]]"#;
        let Packet::Event { name, arg } = decode(frame).expect("decodes") else {
            panic!("not an event");
        };
        assert_eq!(name, "message_delivered");
        assert_eq!(json_of(arg), json!({"seq": 3}));
    }

    #[test]
    fn an_escaped_event_name_is_unescaped() {
        let Packet::Event { name, arg, .. } = decode(r#"42["mes\u0073age"]"#).expect("decodes")
        else {
            panic!("not an event");
        };
        assert_eq!(name, "message");
        assert!(arg.is_none());
    }

    #[test]
    fn an_ack_with_nested_arrays_and_brackets_in_strings() {
        let frame =
            r#"4312[{"success":true,"messages":[[1,"a]b"],{"x":"]\"[,"}]},"second]",[3,[4]]]"#;
        let Packet::Ack { id, arg } = decode(frame).expect("decodes") else {
            panic!("not an ack");
        };
        assert_eq!(id, 12);
        assert_eq!(
            json_of(arg),
            json!({"success": true, "messages": [[1, "a]b"], {"x": "]\"[,"}]})
        );
    }

    #[test]
    fn an_ack_without_arguments_and_one_without_an_id() {
        let Packet::Ack { id, arg } = decode("430[]").expect("decodes") else {
            panic!("not an ack");
        };
        assert_eq!((id, arg.is_none()), (0, true));
        assert!(decode(r#"43[{"success":true}]"#).is_err());
    }

    #[test]
    fn the_handshake_packets() {
        let open = r#"0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#;
        let Packet::Open(open) = decode(open).expect("decodes") else {
            panic!("not open");
        };
        assert_eq!(
            open,
            Open {
                sid: "s1".into(),
                ping_interval: 25000,
                ping_timeout: 20000
            }
        );
        let connect = connect(&json!({"token": "a\"b"})).expect("encodes");
        assert_eq!(connect, r#"40{"token":"a\"b"}"#);
        assert!(matches!(decode(r#"40{"sid":"x9"}"#), Ok(Packet::Connected)));
        assert!(decode("40{}").is_err(), "an answer without a sid");
    }

    #[test]
    fn a_connect_error_carries_its_message() {
        let frame = r#"44{"message":"UNAUTHORIZED: token expired","data":{"code":"x"}}"#;
        let Packet::ConnectError { message } = decode(frame).expect("decodes") else {
            panic!("not a connect error");
        };
        assert_eq!(message, "UNAUTHORIZED: token expired");
    }

    #[test]
    fn ping_close_noop_and_disconnect() {
        assert!(matches!(decode("2"), Ok(Packet::Ping)));
        assert!(matches!(decode("3"), Ok(Packet::Noop)));
        assert!(matches!(decode("6"), Ok(Packet::Noop)));
        assert!(matches!(decode("1"), Ok(Packet::Close)));
        assert!(matches!(decode(DISCONNECT), Ok(Packet::Disconnect)));
        assert_eq!(PONG, "3");
    }

    #[test]
    fn what_the_driver_does_not_speak_is_an_error() {
        for frame in [
            "",
            "9",
            "4",
            "é",
            r#"42/admin,["message",{}]"#,
            r#"451-["message",{"_placeholder":true,"num":0}]"#,
            r#"42["message",{]"#,
            "42{}",
        ] {
            assert!(decode(frame).is_err(), "{frame:?} decoded");
        }
    }
}
