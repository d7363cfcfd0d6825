//! Disconnecting a socket for sure.
//!
//! socketioxide's `disconnect()` must queue a DISCONNECT packet first; while the socket's
//! outgoing queue is full it returns `InternalChannelFull` and leaves the socket
//! connected. A socket disconnected because it cannot keep up (§7.4), or because its
//! token expired (§3), would then stay connected: out of its rooms, yet never told, so
//! its client would never reconnect and `sync`. So the disconnect is tried again until it
//! goes through (the client read some of its backlog, and the DISCONNECT follows the last
//! packet it was sent) or the socket is gone (a client that never reads again is closed by
//! the Engine.IO heartbeat, whose ping cannot be queued either).

use socketioxide::socket::Sid;
use socketioxide::{SocketError, SocketIo};
use std::time::Duration;

/// How often a disconnect is tried again while the socket's queue is still full.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// Disconnects socket `sid`, now or as soon as its queue has room.
pub fn disconnect(io: &SocketIo, sid: Sid) {
    let Some(socket) = crate::socket::connected(io, sid) else {
        return;
    };
    if !matches!(socket.disconnect(), Err(SocketError::InternalChannelFull)) {
        return;
    }
    let io = io.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETRY_EVERY).await;
            let Some(socket) = crate::socket::connected(&io, sid) else {
                return;
            };
            if !matches!(socket.disconnect(), Err(SocketError::InternalChannelFull)) {
                return;
            }
        }
    });
}
