//! The connection limit (§6), counted where a connection begins: the Engine.IO handshake.
//!
//! Counting Socket.IO CONNECTs missed sessions that handshake and never connect: each holds
//! ~25 KB until it is reaped, and none was counted. So the first request of every Engine.IO
//! session (a `/socket.io/` request without a `sid`, polling or WebSocket) is charged here,
//! before socketioxide creates the session. A session over the limit is still created but
//! marked: its CONNECT is then refused with `connect_error` `RATE_LIMITED` (the contract's
//! answer, which only a Socket.IO packet can carry), and if it never sends one it is reaped
//! after the connect timeout like any other.

use crate::app::AppRef;
use crate::socket::connect::client_ip;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::Response;
use coachwire_shared::error::Failure;

/// The refusal a handshake earned, read by the CONNECT middleware from the session's
/// request parts.
#[derive(Clone, Debug)]
pub struct OverConnectionLimit(pub Failure);

/// Charges new Engine.IO sessions against their client's connection limit.
pub fn count(router: Router, app: AppRef) -> Router {
    router.layer(middleware::from_fn_with_state(app, charge))
}

async fn charge(State(app): State<AppRef>, mut request: Request, next: Next) -> Response {
    if opens_a_session(request.uri())
        && let Some(ip) = client_ip(
            request.headers(),
            request.extensions(),
            app.limits.trust_proxy,
        )
        && let Err(refused) = app.limits.connection(ip)
    {
        request
            .extensions_mut()
            .insert(OverConnectionLimit(refused));
    }
    next.run(request).await
}

/// The first request of an Engine.IO session: to the Socket.IO path, with no `sid` yet.
pub(crate) fn opens_a_session(uri: &Uri) -> bool {
    uri.path().starts_with("/socket.io/")
        && !uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")))
}
