//! Which browser pages may use this server (§2 `COACHWIRE_CORS_ORIGINS`).
//!
//! CORS headers only tell a browser what a page may read; they stop nothing on the server,
//! and browsers do not apply CORS to WebSockets at all. So a request that names an `Origin`
//! is checked here, before the Socket.IO layer or a route sees it: unless that origin is the
//! server's own or listed, the request is refused with 403 `FORBIDDEN`, whatever its path
//! and transport. Requests without `Origin` come from no browser page (servers, Node's
//! socket.io-client, curl) and pass, as they always have.
//!
//! Listed origins also get the CORS response headers, so their pages can read the answers.

use crate::http::ApiError;
use crate::settings::{CorsOrigins, WebOrigin};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use coachwire_shared::error::{ErrorCode, Failure};
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may reuse a preflight answer: it saves a round trip per API call,
/// and ten minutes lets a narrowed origin list take hold soon (Chromium caps it at 2 h).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Wraps everything `router` serves, the Socket.IO layer included, so the check must be
/// applied after that layer has been added.
pub fn guard(router: Router, origins: CorsOrigins) -> Router {
    // Every `Origin` is visible ASCII, which any header value can hold.
    let listed = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin.as_str()).ok());
    // socket.io-client sends no credentials (withCredentials is false) and a token travels
    // in `Authorization`, so credentials stay off.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(listed))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([AUTHORIZATION, CONTENT_TYPE])
        .max_age(PREFLIGHT_MAX_AGE);
    // The last layer added runs first: foreign origins are refused before CORS answers
    // their preflights.
    router.layer(cors).layer(middleware::from_fn_with_state(
        Arc::new(origins),
        refuse_foreign_origins,
    ))
}

async fn refuse_foreign_origins(
    State(origins): State<Arc<CorsOrigins>>,
    request: Request,
    next: Next,
) -> Response {
    if allowed(&origins, &request) {
        return next.run(request).await;
    }
    tracing::debug!(
        origin = ?request.headers().get(ORIGIN),
        path = request.uri().path(),
        "refused a request from a foreign origin"
    );
    ApiError::from(Failure::new(
        ErrorCode::Forbidden,
        "this origin may not use the server",
    ))
    .into_response()
}

/// No `Origin` (not a page in a browser), the server's own, or a listed one.
fn allowed(origins: &CorsOrigins, request: &Request) -> bool {
    let Some(origin) = request.headers().get(ORIGIN) else {
        return true;
    };
    // An `Origin` that is not one (`null` from a sandboxed frame or a file) is no page of ours.
    origin
        .to_str()
        .ok()
        .and_then(|o| WebOrigin::parse(o).ok())
        .is_some_and(|origin| is_same_origin(&origin, request) || origins.contains(&origin))
}

/// The page came from this very host and port. Either scheme counts: behind a proxy that
/// ends TLS the server sees plain HTTP for an `https://` page. A proxy that rewrites `Host`
/// hides the public name; its origin then has to be listed.
fn is_same_origin(origin: &WebOrigin, request: &Request) -> bool {
    if !matches!(origin.scheme(), "http" | "https") {
        return false;
    }
    // HTTP/2 carries the host in the URI, not in a `Host` header.
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    host.and_then(|host| WebOrigin::parse(&format!("{}://{host}", origin.scheme())).ok())
        .is_some_and(|own| own == *origin)
}
