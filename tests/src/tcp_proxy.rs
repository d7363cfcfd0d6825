//! A TCP proxy a test can cut: one service's link to NATS (or anything else) fails on
//! demand while every other process keeps its own.
//!
//! Killing nats-server would cut every service at once; a network partition of a single
//! node is what the rooms' healing (gap fill, tail check, catch-up on reconnect) is for.
//! Each accepted connection is forwarded to the target. [`TcpProxy::cut`] closes every
//! current connection and makes new ones close as soon as they are accepted, so a client
//! sees its server vanish and its reconnects fail, until [`TcpProxy::restore`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

#[derive(Default)]
struct State {
    cut: bool,
    /// Connections let through since the proxy started.
    forwarded: u64,
    /// The forwarding tasks of the live connections; aborting one drops both sockets.
    connections: Vec<AbortHandle>,
}

/// A forwarding proxy on `127.0.0.1`; stops (and closes every connection) when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    acceptor: JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TcpProxy {
    /// Listens on a free port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let acceptor = tokio::spawn(accept(listener, target, Arc::clone(&state)));
        Ok(Self {
            addr,
            state,
            acceptor,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as a NATS server URL.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Closes every current connection and closes new ones on accept until [`restore`](Self::restore).
    pub fn cut(&self) {
        let mut state = lock(&self.state);
        state.cut = true;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    /// How many connections have been let through so far: a client behind a restored
    /// proxy has reconnected once this grows.
    pub fn forwarded(&self) -> u64 {
        lock(&self.state).forwarded
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        lock(&self.state).cut = false;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, state: Arc<Mutex<State>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors, say: pause rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        // Decided under the lock that `cut` takes, so no connection outlives a cut.
        let mut state = lock(&state);
        if state.cut {
            drop(client);
            continue;
        }
        state.connections.retain(|c| !c.is_finished());
        state.forwarded += 1;
        let task = tokio::spawn(forward(client, target));
        state.connections.push(task.abort_handle());
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

#[cfg(test)]
mod tests {
    use super::TcpProxy;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(5);

    async fn echo_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Writes `bytes` and reads the echo back; `None` if the connection closed.
    async fn round_trip(socket: &mut TcpStream, bytes: &[u8]) -> Option<Vec<u8>> {
        socket.write_all(bytes).await.ok()?;
        let mut echoed = vec![0; bytes.len()];
        match timeout(WAIT, socket.read_exact(&mut echoed)).await {
            Ok(Ok(_)) => Some(echoed),
            Ok(Err(_)) => None,
            Err(_) => panic!("neither echo nor close within {WAIT:?}"),
        }
    }

    /// Whether the peer closed the connection (EOF or reset) within [`WAIT`].
    async fn closed(socket: &mut TcpStream) -> bool {
        let mut byte = [0; 1];
        matches!(
            timeout(WAIT, socket.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_cut_closes_connections_and_refuses_new_ones_until_restored() {
        let proxy = TcpProxy::start(echo_server().await).await.expect("proxy");
        let mut first = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(
            round_trip(&mut first, b"hello").await.as_deref(),
            Some(&b"hello"[..])
        );

        proxy.cut();
        assert!(closed(&mut first).await, "a cut closes the live connection");
        let mut refused = TcpStream::connect(proxy.addr()).await.expect("accepted");
        assert!(
            closed(&mut refused).await,
            "a cut proxy closes new connections"
        );

        assert_eq!(
            proxy.forwarded(),
            1,
            "a refused connection is not forwarded"
        );
        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(
            round_trip(&mut again, b"again").await.as_deref(),
            Some(&b"again"[..])
        );
    }
}
