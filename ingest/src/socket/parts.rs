//! A session's request, copied off the connection's read buffer before socketioxide keeps it.
//!
//! engineioxide keeps the request parts of the request that opened a session (its URI,
//! headers and extensions) for the session's whole life: `SocketRef::req_parts` reads
//! them. hyper parses a request's URI and header values as slices of the connection's
//! read buffer (16 KiB once the request took two reads), and axum's router keeps a clone
//! of the URI as `OriginalUri`. So those few hundred bytes kept the whole buffer alive
//! for as long as the socket stayed connected: 16 KB of live heap per idle socket, of
//! ~42 KB (heaptrack with 5000 joined sockets; `docs/benchmarks.md`, "Memory per
//! connection"). Copying them into their own allocations lets the buffer go once the
//! WebSocket upgrade is done. Only requests that open a session are copied; every other
//! request's parts end with the request.

use crate::socket::handshake::opens_a_session;
use axum::Router;
use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::middleware;

/// Copies the URI and headers of every session-opening request before socketioxide sees it.
pub fn owned(router: Router) -> Router {
    router.layer(middleware::map_request(own_parts))
}

async fn own_parts(request: Request) -> Request {
    if !opens_a_session(&request) {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    parts.uri = owned_uri(&parts.uri);
    // axum's router keeps a clone of the URI as it arrived, for `OriginalUri`.
    if let Some(OriginalUri(original)) = parts.extensions.get_mut::<OriginalUri>() {
        *original = owned_uri(original);
    }
    parts.headers = owned_headers(&parts.headers);
    Request::from_parts(parts, body)
}

/// The same URI in its own allocation. A URI that does not parse again (it always should:
/// it was parsed once) is kept as it was.
fn owned_uri(uri: &Uri) -> Uri {
    Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone())
}

/// The same headers, every value (and every non-standard name) in its own allocation,
/// repeated headers kept in order.
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or(name.clone());
            let value = HeaderValue::from_bytes(value.as_bytes()).unwrap_or(value.clone());
            (name, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A request whose URI and a repeated header's values are slices of one buffer, as
    /// hyper parses them, and that buffer.
    fn parsed(uri: &str) -> (Request, Bytes) {
        let buffer = Bytes::from(format!("{uri}abc-def and the rest"));
        let end = uri.len();
        let mut request = Request::new(axum::body::Body::empty());
        *request.uri_mut() = Uri::from_maybe_shared(buffer.slice(..end)).expect("uri");
        let original = OriginalUri(request.uri().clone());
        request.extensions_mut().insert(original);
        let value = HeaderValue::from_maybe_shared(buffer.slice(end..end + 7)).expect("value");
        request.headers_mut().append("x-custom", value.clone());
        request.headers_mut().append("x-custom", value);
        (request, buffer)
    }

    #[tokio::test]
    async fn a_session_request_keeps_its_uri_and_headers_but_not_the_buffer_they_came_from() {
        let (request, buffer) = parsed("/socket.io/?EIO=4&transport=websocket");
        let request = own_parts(request).await;
        assert_eq!(request.uri(), "/socket.io/?EIO=4&transport=websocket");
        let original = request.extensions().get::<OriginalUri>().map(|o| &o.0);
        assert_eq!(original, Some(request.uri()));
        let values: Vec<_> = request.headers().get_all("x-custom").iter().collect();
        assert_eq!(values, ["abc-def", "abc-def"]);
        assert!(
            buffer.is_unique(),
            "the request still holds slices of the read buffer"
        );
    }

    #[tokio::test]
    async fn other_requests_are_left_as_they_are() {
        let (request, buffer) = parsed("/v1/conversations?limit=1");
        let request = own_parts(request).await;
        assert_eq!(request.uri(), "/v1/conversations?limit=1");
        assert!(
            !buffer.is_unique(),
            "copied a request that does not open a session"
        );
        drop(request);
        assert!(buffer.is_unique());
    }
}
