//! A session's request, copied off the connection's read buffer before anything keeps it.
//!
//! engineioxide keeps the request parts of the request that opened a session (its URI,
//! headers and extensions) for the session's whole life: `SocketRef::req_parts` reads
//! them. hyper parses a request's URI and header values as slices of the connection's
//! read buffer (16 KiB once the request took two reads), so those few hundred bytes kept
//! the whole buffer alive for as long as the socket stayed connected: 16 KB of live heap
//! per idle socket, of ~42 KB (heaptrack with 5000 joined sockets; `docs/benchmarks.md`,
//! "Memory per connection (2026-12-08)"). Copying them into their own allocations lets
//! the buffer go once the WebSocket upgrade is done.
//!
//! The copy is made where hyper hands the request over ([`crate::serve`]), before the
//! router sees it: axum's router keeps a clone of the URI (`OriginalUri`), and every
//! clone made after this one shares the copy, not the buffer. Only requests that open a
//! session are copied; every other request's parts end with the request. Header names
//! are left as they are: hyper already copies the ones that are not standard.

use crate::socket::handshake::opens_a_session;
use axum::http::{HeaderMap, HeaderValue, Request, Uri};

/// `request` with its URI and header values in allocations of their own if it opens a
/// session; any other request as it is.
pub fn detached<B>(request: Request<B>) -> Request<B> {
    if !opens_a_session(request.uri()) {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    parts.uri = owned_uri(&parts.uri);
    parts.headers = owned_headers(&parts.headers);
    Request::from_parts(parts, body)
}

/// The same URI in its own allocation. A URI that does not parse again (it always should:
/// it was parsed once) is kept as it was.
fn owned_uri(uri: &Uri) -> Uri {
    Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone())
}

/// The same headers, every value in its own allocation, repeated headers kept in order.
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .map(|(name, value)| {
            let value = HeaderValue::from_bytes(value.as_bytes()).unwrap_or(value.clone());
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A request whose URI and a repeated header's values are slices of one buffer, as
    /// hyper parses them, and that buffer.
    fn parsed(uri: &str) -> (Request<()>, Bytes) {
        let buffer = Bytes::from(format!("{uri}abc-def and the rest"));
        let end = uri.len();
        let mut request = Request::new(());
        *request.uri_mut() = Uri::from_maybe_shared(buffer.slice(..end)).expect("uri");
        let value = HeaderValue::from_maybe_shared(buffer.slice(end..end + 7)).expect("value");
        request.headers_mut().append("x-custom", value.clone());
        request.headers_mut().append("x-custom", value);
        (request, buffer)
    }

    #[test]
    fn a_session_request_keeps_its_uri_and_headers_but_not_the_buffer_they_came_from() {
        let (request, buffer) = parsed("/socket.io/?EIO=4&transport=websocket");
        let request = detached(request);
        assert_eq!(request.uri(), "/socket.io/?EIO=4&transport=websocket");
        let values: Vec<_> = request.headers().get_all("x-custom").iter().collect();
        assert_eq!(values, ["abc-def", "abc-def"]);
        assert!(
            buffer.is_unique(),
            "the request still holds slices of the read buffer"
        );
    }

    #[test]
    fn other_requests_are_left_as_they_are() {
        let (request, buffer) = parsed("/v1/conversations?limit=1");
        let request = detached(request);
        assert_eq!(request.uri(), "/v1/conversations?limit=1");
        assert!(
            !buffer.is_unique(),
            "copied a request that does not open a session"
        );
        drop(request);
        assert!(buffer.is_unique());
    }
}
