//! A CONNECT over §5's 64 KiB packet limit, sent by HTTP long-polling, still gets the
//! contract's answer: `connect_error` `UNAUTHORIZED` (§3), not a dropped transport.
//!
//! Why here: Engine.IO refuses a polling body over its payload limit with a bare HTTP
//! error before any Socket.IO packet is parsed, and the client then sees only "xhr post
//! error" and retries for ever; a 100 KB token looked like an outage, not a refusal. This
//! layer reads a polling POST that may be over the limit (its `Content-Length` says so, or
//! it has none) up to the limit; if it is longer and begins with a CONNECT
//! (`40`), the rest is read and thrown away (never held: §5 allows buffering no more than
//! the limit) and Engine.IO gets a small CONNECT whose `auth` says what happened, which the
//! handshake refuses like any bad token. Any other oversized body passes on unchanged, for
//! Engine.IO to refuse as before. A POST whose `Content-Length` is within the limit (every
//! chat message a polling client sends) passes untouched: this layer costs it a header
//! read, not a copy. A WebSocket frame over the limit is refused by the
//! WebSocket layer before it is read, and closes that connection (§5).

use crate::http::BODY_READ_DEADLINE;
use crate::startup::MAX_PACKET_BYTES;
use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

/// The `auth` key that marks a CONNECT this layer replaced. A client that sends it itself
/// is refused the same way, which is all it can gain.
pub const OVERSIZED_AUTH_KEY: &str = "coachwire:oversized";
/// Past this, an oversized CONNECT is not read to its end: the request is refused with
/// 413 and the connection closed, as Engine.IO does.
const DRAIN_AT_MOST: usize = 4 * 1024 * 1024;

/// Wraps `router` (the Socket.IO layer included) with the oversized-CONNECT rewrite.
pub fn answer_oversized_connects(router: Router) -> Router {
    router.layer(middleware::from_fn(rewrite))
}

async fn rewrite(request: Request, next: Next) -> Response {
    if !is_polling_post(&request) || declared_within_limit(&request) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let mut data = body.into_data_stream();
    let head = match tokio::time::timeout(BODY_READ_DEADLINE, read_head(&mut data)).await {
        Ok(Ok(head)) => head,
        Ok(Err(())) => return StatusCode::BAD_REQUEST.into_response(),
        Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
    };
    let body = match head {
        Head::Whole(bytes) => Body::from(bytes),
        Head::Over(bytes) if bytes.starts_with(b"40") => {
            match tokio::time::timeout(BODY_READ_DEADLINE, drain(data, bytes.len())).await {
                Ok(true) => {}
                _ => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            }
            let connect = format!("40{{\"{OVERSIZED_AUTH_KEY}\":true}}");
            parts
                .headers
                .insert(header::CONTENT_LENGTH, connect.len().into());
            Body::from(connect)
        }
        Head::Over(bytes) => {
            let rest = data.map(|chunk| chunk.map_err(axum::Error::new));
            Body::from_stream(futures::stream::once(async { Ok(bytes) }).chain(rest))
        }
    };
    next.run(Request::from_parts(parts, body)).await
}

/// A POST of an Engine.IO polling session (its packets from client to server).
fn is_polling_post(request: &Request) -> bool {
    let uri = request.uri();
    request.method() == Method::POST
        && uri.path().starts_with("/socket.io/")
        && uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "transport=polling"))
}

/// A body whose declared length is within the limit (hyper stops reading at that length).
fn declared_within_limit(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|length| length <= MAX_PACKET_BYTES)
}

/// The first bytes of a body: all of it, or the first that went past the limit.
enum Head {
    Whole(Bytes),
    Over(Bytes),
}

async fn read_head(data: &mut BodyDataStream) -> Result<Head, ()> {
    let mut head = BytesMut::new();
    while let Some(chunk) = data.next().await {
        head.extend_from_slice(&chunk.map_err(|_| ())?);
        if head.len() > MAX_PACKET_BYTES {
            return Ok(Head::Over(head.freeze()));
        }
    }
    Ok(Head::Whole(head.freeze()))
}

/// Reads the rest of a body without keeping it; `false` past [`DRAIN_AT_MOST`] or on a
/// broken body.
async fn drain(mut data: BodyDataStream, mut read: usize) -> bool {
    while read <= DRAIN_AT_MOST {
        match data.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            Some(Err(_)) => return false,
            None => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tower::ServiceExt;

    /// What the Socket.IO layer would get: here, the body it was handed, echoed.
    async fn handed_on(body: Vec<u8>, query: &str) -> (StatusCode, Bytes) {
        handed_on_declared(body, query, None).await
    }

    async fn handed_on_declared(
        body: Vec<u8>,
        query: &str,
        length: Option<usize>,
    ) -> (StatusCode, Bytes) {
        let router = answer_oversized_connects(
            Router::new().route("/socket.io/", post(|body: Bytes| async move { body })),
        );
        let mut request = Request::post(format!("/socket.io/?EIO=4&{query}"));
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        let request = request.body(Body::from(body)).expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, body)
    }

    fn connect_of(len: usize) -> Vec<u8> {
        let mut body = b"40{\"token\":\"".to_vec();
        body.resize(len - 2, b'a');
        body.extend_from_slice(b"\"}");
        body
    }

    #[tokio::test]
    async fn an_oversized_polling_connect_is_replaced_by_one_the_handshake_refuses() {
        let (status, body) = handed_on(connect_of(100_000), "transport=polling&sid=x").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("40{{\"{OVERSIZED_AUTH_KEY}\":true}}"));
    }

    #[tokio::test]
    async fn everything_else_passes_unchanged() {
        let small = connect_of(1_000);
        assert_eq!(
            handed_on(small.clone(), "transport=polling&sid=x").await.1,
            small
        );
        let not_a_connect = vec![b'4'; 100_000];
        let (_, body) = handed_on(not_a_connect.clone(), "transport=polling&sid=x").await;
        assert_eq!(body, not_a_connect, "Engine.IO refuses it itself");
        let (_, body) = handed_on(connect_of(100_000), "transport=websocket").await;
        assert_eq!(body.len(), 100_000, "not a polling request");
    }

    /// The fast path: a body declared within the limit is not read here (this one lies,
    /// which hyper would catch on a real connection; here it shows nothing was rewritten).
    #[tokio::test]
    async fn a_body_declared_within_the_limit_is_not_read_here() {
        let lying = connect_of(100_000);
        let query = "transport=polling&sid=x";
        let (_, body) = handed_on_declared(lying.clone(), query, Some(1_000)).await;
        assert_eq!(body, lying);
        let (_, body) = handed_on_declared(lying, query, Some(100_000)).await;
        assert_eq!(body, format!("40{{\"{OVERSIZED_AUTH_KEY}\":true}}"));
    }

    #[tokio::test]
    async fn a_connect_too_large_to_read_to_its_end_gets_413() {
        let (status, _) = handed_on(connect_of(DRAIN_AT_MOST + 1), "transport=polling&sid=x").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
