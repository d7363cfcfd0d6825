//! `GET /asyncapi.json` and `GET /openapi.json`: the documents of this port's events and
//! routes, generated from the wire types by [`coachwire_shared::api_docs`].
//!
//! Each is built on its first request and kept for the life of the process: it depends on
//! nothing but the types compiled in, so every later request gets the same bytes.

use axum::Json;
use serde_json::Value;
use std::sync::OnceLock;

static ASYNCAPI: OnceLock<Value> = OnceLock::new();
static OPENAPI: OnceLock<Value> = OnceLock::new();

pub async fn asyncapi() -> Json<&'static Value> {
    Json(ASYNCAPI.get_or_init(coachwire_shared::api_docs::asyncapi))
}

pub async fn openapi() -> Json<&'static Value> {
    Json(OPENAPI.get_or_init(coachwire_shared::api_docs::openapi))
}
