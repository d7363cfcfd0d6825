//! What every coachwire service shares, and nothing else.
//!
//! - [`ids`]: the identifier newtypes (`ConversationId`, `UserId`, `MessageId`, `Seq`, …).
//! - [`message`]: the wire types of the contract (the message object and payloads).
//! - [`replies`]: what the server answers: success acks, presence events, HTTP bodies.
//! - [`validation`]: the JSON Schema generated from those payload types, and the content
//!   rules a schema cannot say; produces `details` with JSON pointers.
//! - [`error`]: the one `ErrorCode` enum and the failure body clients see.
//! - [`api_docs`]: the AsyncAPI and OpenAPI documents of ingest's public port, generated
//!   from the types above.
//! - [`envelope`]: what travels through NATS (accepted → persisted → room events).
//! - [`subjects`], [`nats`]: stream/subject names and their idempotent declaration.
//! - [`db`]: the Postgres pool, migrations and the read queries two services use.
//! - [`lasting`]: whether a failure can pass, which decides retry against give-up.
//! - [`settings`], [`telemetry`], [`metrics`], [`health`], [`shutdown`], [`process`]:
//!   process plumbing every binary shares.
//!
//! Data flows socket → ingest → `MESSAGES` stream → persister → Postgres → `PERSISTED`
//! stream → fanout → room subject → ingest node → Socket.IO room.

pub mod api_docs;
pub mod db;
mod db_connect;
pub mod envelope;
pub mod error;
pub mod health;
pub mod ids;
pub mod lasting;
pub mod message;
pub mod metrics;
pub mod nats;
pub mod process;
pub mod replies;
pub mod settings;
pub mod shutdown;
pub mod subjects;
pub mod telemetry;
pub mod validation;
