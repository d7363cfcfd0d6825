//! The Socket.IO side of ingest: the handshake and what every event handler shares.

pub mod connect;
pub mod evict;
pub mod extract;
pub mod handshake;
pub mod order;
pub mod oversized;
pub mod parts;

use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

/// The socket `sid` of the default namespace, while it is connected. Not
/// `SocketIo::get_socket`: it panics once shutdown has closed the namespace, and room
/// actors and the reply reaper still run then (seen in the fault soak's restarts).
pub fn connected(io: &SocketIo, sid: Sid) -> Option<SocketRef> {
    io.of("/")?.get_socket(sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn after_shutdown_closed_the_namespace_no_socket_is_connected_and_nothing_panics() {
        let (_layer, io) = SocketIo::new_layer();
        io.ns("/", async || {});
        io.close().await;
        let sid = Sid::new();
        assert!(connected(&io, sid).is_none());
        let io = std::panic::AssertUnwindSafe(io);
        let panicked = std::panic::catch_unwind(|| io.get_socket(sid).is_none()).is_err();
        assert!(panicked, "the call `connected` stands in for panics here");
    }
}
