//! Streamed replies (§14): the AI coach's answer reaches the room while its model writes
//! it, and ends as one stored message.
//!
//! - The start is a message like any other (status `streaming`, content empty) through the
//!   durable path, so it takes its `seq` at once.
//! - Each append is published to the `REPLIES` stream on the reply's subject before it is
//!   acked: that copy survives the crash of any one process. Rooms on every node hear it on
//!   the same subject and emit `reply_delta`; no append is written to Postgres.
//! - The end is a later version of the message through the durable path (its own `seq`,
//!   `message_updated`), and the reply's appends are purged.
//!
//! - [`registry`]: the replies this node's sockets are writing, one lock each, so that a
//!   reply's appends and its end happen one at a time and in offset order;
//! - [`text`]: the text so far as the `REPLIES` stream holds it, for whoever was not there;
//! - [`finish`]: the one way a reply ends;
//! - [`reaper`]: ends the replies nobody will end: idle, stopped past their grace, or left
//!   by a node that died.

pub mod finish;
pub mod reaper;
pub mod registry;
pub mod text;

pub use registry::{Replies, Reply, Writing};
