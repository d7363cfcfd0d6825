//! `COACHWIRE_CORS_ORIGINS` (§2) where it needs the served port or the binary: the
//! WebSocket upgrade is refused with 403 for any origin not listed (browsers apply no CORS
//! there), requests without `Origin` are served as before, the server's own origin is
//! allowed by default, and a bad value stops startup. The headers of the HTTP routes and
//! of polling are proven in process (`ingest/tests/app/cors.rs`).

use coachwire_testkit::stack::{Stack, StackOptions, bin_dir, new_user, token};
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN};
use reqwest::{Method, RequestBuilder, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ALLOWED: &str = "http://allowed.test:8080";
const FOREIGN: &str = "http://foreign.test:8080";
const POLLING_HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";

async fn stack_allowing(origins: &str) -> Stack {
    Stack::start_with(StackOptions {
        env: vec![("COACHWIRE_CORS_ORIGINS".into(), origins.into())],
        ..Default::default()
    })
    .await
    .expect("stack")
}

/// A request to the first ingest node, with `Origin: origin` when given.
fn request(stack: &Stack, method: Method, path: &str, origin: Option<&str>) -> RequestBuilder {
    let request = stack.http.request(method, format!("{}{path}", stack.url()));
    match origin {
        Some(origin) => request.header(ORIGIN, origin),
        None => request,
    }
}

fn header<'a>(response: &'a Response, name: &reqwest::header::HeaderName) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The status code of a raw WebSocket upgrade of the Socket.IO transport (101 or a refusal).
async fn websocket_upgrade_status(stack: &Stack, origin: Option<&str>) -> u16 {
    let port = stack.ingest[0].port;
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let upgrade = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         Connection: Upgrade\r\n\
         Upgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         {origin}\r\n"
    );
    stream
        .write_all(upgrade.as_bytes())
        .await
        .expect("send upgrade");
    let mut status_line = String::new();
    BufReader::new(stream)
        .read_line(&mut status_line)
        .await
        .expect("status line");
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"))
}

#[tokio::test]
async fn the_socket_io_websocket_opens_for_listed_origins_only() {
    let stack = stack_allowing(ALLOWED).await;
    assert_eq!(websocket_upgrade_status(&stack, Some(ALLOWED)).await, 101);
    assert_eq!(websocket_upgrade_status(&stack, Some(FOREIGN)).await, 403);
    assert_eq!(
        websocket_upgrade_status(&stack, Some("null")).await,
        403,
        "the opaque origin of a sandboxed frame is no listed page"
    );
}

#[tokio::test]
async fn requests_without_an_origin_are_served_as_before() {
    let stack = stack_allowing(ALLOWED).await;
    let user = new_user();
    stack.db.conversation(&[user]).await.expect("conversation");
    let listed = request(&stack, Method::GET, "/api/conversations", None)
        .bearer_auth(token(user, None, 60))
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status(), 200);
    assert_eq!(header(&listed, &ACCESS_CONTROL_ALLOW_ORIGIN), None);
    let polled = request(&stack, Method::GET, POLLING_HANDSHAKE, None)
        .send()
        .await
        .expect("handshake");
    assert_eq!(polled.status(), 200);
    assert_eq!(websocket_upgrade_status(&stack, None).await, 101);
}

#[tokio::test]
async fn without_the_variable_only_the_same_origin_is_allowed() {
    let stack = Stack::start().await.expect("stack");
    let own = stack.url();
    let user = new_user();
    stack.db.conversation(&[user]).await.expect("conversation");
    for (origin, expected) in [(own.as_str(), 200), (ALLOWED, 403)] {
        let listed = request(&stack, Method::GET, "/api/conversations", Some(origin))
            .bearer_auth(token(user, None, 60))
            .send()
            .await
            .expect("list");
        assert_eq!(listed.status(), expected, "API from {origin}");
        let polled = request(&stack, Method::GET, POLLING_HANDSHAKE, Some(origin))
            .send()
            .await
            .expect("handshake");
        assert_eq!(polled.status(), expected, "polling from {origin}");
    }
    assert_eq!(websocket_upgrade_status(&stack, Some(&own)).await, 101);
    assert_eq!(websocket_upgrade_status(&stack, Some(ALLOWED)).await, 403);
}

#[tokio::test]
async fn a_wildcard_or_malformed_value_stops_startup_naming_the_variable() {
    let cases = [
        ("*", "any origin"),
        ("https://app.example.com,*", "a wildcard in a list"),
        ("https://app.example.com/", "a path"),
        ("app.example.com", "no scheme"),
    ];
    for (value, reason) in cases {
        let output = tokio::process::Command::new(bin_dir().join("coachwire-ingest"))
            .env("COACHWIRE_CORS_ORIGINS", value)
            .env("RUST_LOG", "off")
            .output()
            .await
            .expect("run coachwire-ingest (build it first)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{reason}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{reason}: {stderr}");
        assert!(
            stderr.starts_with("coachwire-ingest:") && stderr.contains("COACHWIRE_CORS_ORIGINS"),
            "{reason}: {stderr}"
        );
    }
}
