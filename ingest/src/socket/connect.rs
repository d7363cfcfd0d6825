//! The handshake: connection limit, token, and the socket's handlers.
//!
//! Everything happens in a connect *middleware*, which socketioxide runs before it confirms
//! the connection: handlers registered here exist before the client can emit, so a client
//! that emits `join_conversation` in the same tick as `io()` is always answered.

use crate::app::AppRef;
use crate::auth::{Principal, bearer_token};
use crate::events;
use crate::replies::Writing;
use crate::replies::finish::finish;
use crate::socket::extract::JoinedRooms;
use crate::socket::handshake::OverConnectionLimit;
use crate::socket::order::SendOrder;
use crate::socket::oversized::OVERSIZED_AUTH_KEY;
use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use coachwire_shared::envelope::{Origin, Presence, RoomEvent};
use coachwire_shared::error::Failure;
use coachwire_shared::message::MessageStatus;
use coachwire_shared::metrics::CONNECTIONS;
use socketioxide::SocketIo;
use socketioxide::extract::{Extension, SocketRef, State, TryData};
use socketioxide::socket::Sid;
use std::net::{IpAddr, SocketAddr};
use tokio_util::sync::CancellationToken;

/// Refuses or admits a handshake; the refusal reaches the client as `connect_error` with
/// `err.message` = `"CODE: reason"`.
pub async fn authenticate(
    s: SocketRef,
    io: SocketIo,
    State(app): State<AppRef>,
    TryData(auth): TryData<serde_json::Value>,
) -> Result<(), Failure> {
    if let Some(OverConnectionLimit(refused)) = s.req_parts().extensions.get() {
        return Err(refused.clone());
    }
    let token = token_of(&s, auth.ok().as_ref())?;
    let principal = app.verifier.verify(&token)?;
    // jsonwebtoken still accepts a token in the very second of its `exp`; the connection's
    // own clock (`ensure_live`) does not, so check with the one the socket will live by.
    principal.ensure_live()?;
    s.extensions.insert(principal);
    s.extensions.insert(JoinedRooms::default());
    s.extensions.insert(SendOrder::default());
    // A room named after the socket lets broadcasts exclude it (`except(sid)`).
    s.join(s.id.to_string());
    let gone = CancellationToken::new();
    s.extensions.insert(Gone(gone.clone()));
    register_handlers(&s);
    expire_at(io, s.id, principal, gone);
    metrics::gauge!(CONNECTIONS).increment(1.0);
    Ok(())
}

/// The namespace's connect handler: all the work is done in [`authenticate`].
pub async fn on_connect() {}

fn register_handlers(s: &SocketRef) {
    s.on("join_conversation", events::join::handle);
    s.on("leave_conversation", events::leave::handle);
    s.on("message", events::message::handle);
    s.on("typing", events::typing::handle);
    s.on("sync", events::sync::handle);
    s.on("reply_start", events::reply::start);
    s.on("reply_append", events::reply::append);
    s.on("reply_end", events::reply::end);
    s.on("reply_stop", events::reply::stop);
    s.on_disconnect(on_disconnect);
}

/// The token from `auth.token`, else `Authorization: Bearer`. A token in the query string
/// is refused outright: it would sit in every proxy's access log.
fn token_of(s: &SocketRef, auth: Option<&serde_json::Value>) -> Result<String, Failure> {
    let parts = s.req_parts();
    let in_query = parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.starts_with("token=") || kv.starts_with("access_token="))
    });
    if in_query {
        return Err(Failure::unauthorized(
            "tokens in the query string are refused",
        ));
    }
    if auth.is_some_and(|a| a.get(OVERSIZED_AUTH_KEY).is_some()) {
        return Err(Failure::unauthorized(
            "token too long (the handshake was over 64 KiB)",
        ));
    }
    if let Some(token) = auth.and_then(|a| a.get("token")).and_then(|t| t.as_str()) {
        return Ok(token.to_string());
    }
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string)
        .ok_or_else(|| Failure::unauthorized("missing token"))
}

/// The peer address, or with `trust_proxy` the address our proxy appended last to
/// `X-Forwarded-For` (earlier entries are whatever the client claimed).
pub fn client_ip(
    headers: &HeaderMap,
    extensions: &Extensions,
    trust_proxy: bool,
) -> Option<IpAddr> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if trust_proxy {
        forwarded_for(headers).or(peer)
    } else {
        peer
    }
}

/// The last `X-Forwarded-For` entry, the one our proxy wrote, if it is an IP address.
/// Only that one: every earlier entry is whatever the client sent, so falling back to one
/// when the last does not parse (`ip:port`, `unknown`) would let a client pick its own IP.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last_header = headers.get_all("x-forwarded-for").iter().next_back()?;
    let last_entry = last_header.to_str().ok()?.rsplit(',').next()?;
    last_entry.trim().parse().ok()
}

/// A reply whose author's socket is gone ends `interrupted`, with every acked append (§14).
async fn interrupt_replies(app: &AppRef, sid: Sid) {
    for (_, held) in app.replies.of_socket(sid) {
        let mut reply = held.lock().await;
        if reply.writing == Writing::Ended {
            continue;
        }
        if let Err(failure) = finish(app, &mut reply, MessageStatus::Interrupted).await {
            // It stays registered, so the reaper ends it once it has been idle.
            tracing::warn!(error = %failure.error, "ending a disconnected author's reply failed");
        }
    }
}

/// Cancelled when the socket disconnects, so its timers end with it.
#[derive(Clone)]
struct Gone(CancellationToken);

/// Disconnects the socket when its token expires, even if it never sends another event.
/// The timer ends with the socket: with long-lived tokens and connection churn, timers
/// sleeping until `exp` for sockets long gone would pile up.
fn expire_at(io: SocketIo, sid: Sid, principal: Principal, gone: CancellationToken) {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let left = u64::try_from(principal.valid_until.saturating_mul(1000) - now_ms).unwrap_or(0);
    tokio::spawn(async move {
        tokio::select! {
            _ = gone.cancelled() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(left)) => {
                crate::socket::evict::disconnect(&io, sid);
            }
        }
    });
}

async fn on_disconnect(
    s: SocketRef,
    State(app): State<AppRef>,
    Extension(principal): Extension<Principal>,
    Extension(joined): Extension<JoinedRooms>,
    Extension(Gone(gone)): Extension<Gone>,
) {
    gone.cancel();
    metrics::gauge!(CONNECTIONS).decrement(1.0);
    interrupt_replies(&app, s.id).await;
    let origin = Origin {
        node: app.node.clone(),
        sid: s.id.to_string(),
    };
    for conversation in joined.take_all() {
        app.rooms.leave(conversation, s.id);
        let presence = Presence {
            conversation_id: conversation,
            user_id: principal.user,
            origin: origin.clone(),
        };
        app.rooms
            .publish(conversation, &RoomEvent::UserLeft(presence))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_the_last_forwarded_entry_counts_and_only_if_it_is_an_address() {
        let table: [(&[&str], Option<&str>, &str); 6] = [
            (&["203.0.113.9"], Some("203.0.113.9"), "one entry"),
            (
                &["1.1.1.1, 203.0.113.9"],
                Some("203.0.113.9"),
                "the proxy's entry is last",
            ),
            (
                &["1.1.1.1", "203.0.113.9"],
                Some("203.0.113.9"),
                "last of two headers",
            ),
            (
                &["1.1.1.1, 203.0.113.9:4000"],
                None,
                "ip:port is not an address",
            ),
            (&["1.1.1.1, unknown"], None, "unknown"),
            (
                &["1.1.1.1, [2001:db8::1]:80"],
                None,
                "bracketed v6 with a port",
            ),
        ];
        for (values, expected, reason) in table {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("x-forwarded-for", HeaderValue::from_static(value));
            }
            let expected = expected.map(|ip| ip.parse::<IpAddr>().expect("test address"));
            assert_eq!(forwarded_for(&headers), expected, "{reason}");
        }
    }
}
