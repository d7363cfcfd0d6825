//! The HTTP API of §8, on the same port as Socket.IO. Same verifier, same validators,
//! same accept path as the socket: only the transport differs.

pub mod conversations;
pub mod cors;
pub mod demo;
pub mod docs;
pub mod messages;

use crate::app::AppRef;
use crate::auth::{Principal, bearer_token};
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use coachwire_shared::error::{Detail, ErrorCode, Failure};
use std::collections::HashMap;
use std::time::Duration;

/// Largest HTTP body accepted, as for Socket.IO packets (§5).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time a whole body has to arrive: 64 KiB takes well under a second on any real link,
/// while a client trickling a byte at a time would otherwise hold its connection forever.
pub const BODY_READ_DEADLINE: Duration = Duration::from_secs(10);

pub fn router(app: AppRef) -> Router {
    Router::new()
        .route("/schema/message.json", get(message_schema))
        .route("/asyncapi.json", get(docs::asyncapi))
        .route("/openapi.json", get(docs::openapi))
        .route(
            "/api/conversations",
            get(conversations::list).post(conversations::create),
        )
        .route(
            "/api/conversations/{id}/participants/me",
            delete(conversations::leave),
        )
        .route(
            "/api/conversations/{id}/messages",
            get(messages::list).post(messages::post),
        )
        .with_state(app)
}

async fn message_schema(axum::extract::State(app): axum::extract::State<AppRef>) -> Response {
    Json(app.validators.message.schema().clone()).into_response()
}

/// A [`Failure`] as an HTTP response: the §4 failure body with the §8 status.
pub struct ApiError {
    status: StatusCode,
    failure: Failure,
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        let status = StatusCode::from_u16(failure.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, failure }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.failure.body())).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal
where
    AppRef: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let app = AppRef::from_ref(state);
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| Failure::unauthorized("missing bearer token"))?;
        let principal = app.verifier.verify(token)?;
        principal.ensure_live()?;
        Ok(principal)
    }
}

/// A JSON body read with a hard cap: past [`MAX_BODY_BYTES`] the request is answered 413
/// without reading further; bad JSON (including nesting past 128 levels) is a 400.
pub struct JsonBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, _: &S) -> Result<Self, ApiError> {
        let read = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES);
        let bytes: Bytes = tokio::time::timeout(BODY_READ_DEADLINE, read)
            .await
            .map_err(|_| ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                failure: Failure::new(
                    ErrorCode::ValidationFailed,
                    "the body did not arrive in time",
                ),
            })?
            .map_err(|_| ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                failure: Failure::new(
                    ErrorCode::ValidationFailed,
                    "the body is larger than 64 KiB",
                ),
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|_| Failure::validation(vec![Detail::new("", "is not valid JSON")]).into())
    }
}

/// An integer query parameter within `min..=max`, `default` when absent; anything else is
/// `VALIDATION_FAILED` at `/<name>`.
pub(crate) fn int_param(
    query: &HashMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    let Some(raw) = query.get(name) else {
        return Ok(default);
    };
    match raw.parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Failure::validation(vec![Detail::new(
            format!("/{name}"),
            format!("must be an integer from {min} to {max}"),
        )])
        .into()),
    }
}
