//! Machine-readable descriptions of ingest's public port: an AsyncAPI 3.0 document of the
//! Socket.IO events (§4, [`asyncapi()`]) and an OpenAPI 3.1 document of the HTTP routes
//! (§8, [`openapi()`]), which ingest serves at `/asyncapi.json` and `/openapi.json`.
//!
//! Why generated, not written by hand: every payload, ack, event body and failure body in
//! them is the `JsonSchema` of the Rust type ingest reads or writes, generated with the
//! settings of `/schema/message.json` ([`crate::validation::schema_settings`]). A field
//! changed in a type changes both documents, and the `message` payload they publish is the
//! schema validation enforces. Only the prose, the routes, the status codes and the event
//! names are written here; the end-to-end test `api_docs` holds those to CONTRACT §4 and §8
//! and runs the official AsyncAPI and OpenAPI validators on the served documents.
//!
//! Both are pure functions of the types, so callers build them once and cache them.

mod asyncapi;
mod components;
mod openapi;

pub use asyncapi::asyncapi;
pub use openapi::openapi;

#[cfg(test)]
mod tests;
