//! `COACHWIRE_CORS_ORIGINS` (§2) on the HTTP routes and Socket.IO polling: listed origins
//! get the CORS headers, any other `Origin` is refused with 403 `FORBIDDEN` and changes
//! nothing. (The WebSocket upgrade and the startup refusal need a served port and the
//! binary: `tests/tests/e2e/cors.rs`.)

use crate::harness::{Ingest, bearer, json_body};
use axum::body::Body;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, AUTHORIZATION, CONTENT_TYPE, HeaderName, ORIGIN,
};
use axum::http::{Method, Request, Response, StatusCode};
use coachwire_testkit::stack::{new_user, token};

const ALLOWED: &str = "http://allowed.test:8080";
const FOREIGN: &str = "http://foreign.test:8080";
const POLLING_HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";

async fn ingest_allowing(origins: &str) -> Ingest {
    Ingest::start(&[&format!("--cors-origins={origins}")]).await
}

/// A request from `origin`, with extra headers.
fn from(
    origin: &str,
    method: Method,
    path: &str,
    headers: &[(HeaderName, String)],
) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(ORIGIN, origin);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.body(Body::empty()).expect("a request")
}

fn header<'a>(response: &'a Response<Body>, name: &HeaderName) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Asserts the 403 `FORBIDDEN` failure body of §4/§8, without CORS headers.
async fn assert_refused(response: Response<Body>, what: &str) {
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
    assert_eq!(
        header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN),
        None,
        "{what}"
    );
    let body = json_body(response).await;
    assert_eq!(body["success"], false, "{what}: {body}");
    assert_eq!(body["code"], "FORBIDDEN", "{what}: {body}");
    assert!(body["error"].is_string(), "{what}: {body}");
}

async fn preflight(ingest: &Ingest, origin: &str) -> Response<Body> {
    let asks = [
        (
            HeaderName::from_static("access-control-request-method"),
            "POST".into(),
        ),
        (
            HeaderName::from_static("access-control-request-headers"),
            "authorization,content-type".into(),
        ),
    ];
    ingest
        .send(from(origin, Method::OPTIONS, "/api/conversations", &asks))
        .await
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_gets_the_cors_headers() {
    let ingest = ingest_allowing(ALLOWED).await;
    let response = preflight(&ingest, ALLOWED).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(ALLOWED)
    );
    let methods = header(&response, &ACCESS_CONTROL_ALLOW_METHODS).unwrap_or_default();
    for method in ["GET", "POST", "OPTIONS"] {
        assert!(methods.contains(method), "{method} in {methods:?}");
    }
    let headers = header(&response, &ACCESS_CONTROL_ALLOW_HEADERS)
        .unwrap_or_default()
        .to_ascii_lowercase();
    for name in ["authorization", "content-type"] {
        assert!(headers.contains(name), "{name} in {headers:?}");
    }
    assert_eq!(
        header(&response, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
        None,
        "socket.io-client sends no credentials, so none are allowed"
    );
}

#[tokio::test]
async fn a_foreign_origin_gets_no_cors_headers_and_is_refused() {
    let ingest = ingest_allowing(ALLOWED).await;
    assert_refused(preflight(&ingest, FOREIGN).await, "preflight").await;
    let user = new_user();
    ingest.db.conversation(&[user]).await.expect("conversation");
    let auth = (AUTHORIZATION, bearer(&token(user, None, 60)));
    let listed = from(
        FOREIGN,
        Method::GET,
        "/api/conversations",
        std::slice::from_ref(&auth),
    );
    assert_refused(ingest.send(listed).await, "GET /api/conversations").await;
    let json = (CONTENT_TYPE, "application/json".to_string());
    let (parts, _) = from(FOREIGN, Method::POST, "/api/conversations", &[auth, json]).into_parts();
    let posted = Request::from_parts(parts, Body::from(r#"{"participantIds":[]}"#));
    assert_refused(ingest.send(posted).await, "POST /api/conversations").await;
    let schema = from(FOREIGN, Method::GET, "/schema/message.json", &[]);
    assert_refused(ingest.send(schema).await, "GET /schema/message.json").await;
    assert_eq!(
        ingest.db.conversation_count().await.expect("count"),
        1,
        "the refused POST created nothing"
    );
}

#[tokio::test]
async fn a_listed_origin_reads_the_api_with_its_origin_echoed() {
    let ingest = ingest_allowing(&format!("https://other.test, {ALLOWED}")).await;
    let user = new_user();
    let id = ingest.db.conversation(&[user]).await.expect("conversation");
    let auth = (AUTHORIZATION, bearer(&token(user, None, 60)));
    let response = ingest
        .send(from(ALLOWED, Method::GET, "/api/conversations", &[auth]))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(ALLOWED)
    );
    let body = json_body(response).await;
    assert_eq!(body["conversations"][0]["id"], id.to_string(), "{body}");

    let unauthorized = ingest
        .send(from(ALLOWED, Method::GET, "/api/conversations", &[]))
        .await;
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&unauthorized, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(ALLOWED),
        "the page can read why it was refused"
    );
}

#[tokio::test]
async fn socket_io_polling_is_open_to_listed_origins_only() {
    let ingest = ingest_allowing(ALLOWED).await;
    let allowed = ingest
        .send(from(ALLOWED, Method::GET, POLLING_HANDSHAKE, &[]))
        .await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        header(&allowed, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(ALLOWED)
    );
    let open = json_body(allowed).await;
    let open = open.as_str().unwrap_or_default();
    assert!(open.starts_with("0{"), "an engine.io open packet: {open}");

    let foreign = ingest
        .send(from(FOREIGN, Method::GET, POLLING_HANDSHAKE, &[]))
        .await;
    assert_refused(foreign, "polling handshake").await;
}
