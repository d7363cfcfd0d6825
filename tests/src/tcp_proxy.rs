//! A TCP proxy a test can cut, slow down or stall: one service's link to NATS (or one
//! NATS node's links to its peers) fails on demand while every other process keeps its own.
//!
//! Killing nats-server would cut every service at once; a network partition of a single
//! node is what the rooms' healing (gap fill, tail check, catch-up on reconnect) is for.
//! The kernel's netem and iptables are not available to the tests, so the proxy is the
//! network. Each accepted connection is forwarded to the target. [`TcpProxy::cut`] closes
//! every current connection and makes new ones close as soon as they are accepted, so a
//! client sees its server vanish and its reconnects fail, until [`TcpProxy::restore`].
//! [`TcpProxy::set_link`] changes how bytes pass on live and new connections alike: held
//! for a while ([`Link::Delayed`], a slow link) or not at all while the connection stays
//! up ([`Link::Stalled`], the peer that stops reading which no timeout of TCP's notices).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// How bytes pass through a proxy that is not cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Link {
    /// As soon as they arrive.
    #[default]
    Open,
    /// Each chunk this long after it arrived, in order: a link with that much latency.
    Delayed(Duration),
    /// Not at all, with the connection left open, until the link changes again.
    Stalled,
}

/// Bytes read from one side in one go.
const CHUNK: usize = 16 * 1024;
/// Chunks held per direction before the proxy stops reading: a stalled link then pushes
/// back on its sender through TCP, as a real one does, instead of buffering without bound.
const HELD_CHUNKS: usize = 256;

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
    link: watch::Sender<Link>,
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
        let (link, watching) = watch::channel(Link::Open);
        let acceptor = tokio::spawn(accept(listener, target, Arc::clone(&state), watching));
        Ok(Self {
            addr,
            state,
            link,
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

    /// How bytes pass from now on, on live connections and new ones.
    pub fn set_link(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    link: watch::Receiver<Link>,
) {
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
        let task = tokio::spawn(forward(client, target, link.clone()));
        state.connections.push(task.abort_handle());
    }
}

/// Both directions until both ended; an error in one drops the whole connection.
async fn forward(client: TcpStream, target: SocketAddr, link: watch::Receiver<Link>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let _ = tokio::try_join!(
        pipe(client_read, server_write, link.clone()),
        pipe(server_read, client_write, link),
    );
}

/// One direction: a reader that timestamps chunks, and a writer that passes each on once
/// the link lets it (which keeps their order whatever the link does meanwhile).
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut link: watch::Receiver<Link>,
) -> std::io::Result<()> {
    let (held, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(HELD_CHUNKS);
    let read = async move {
        loop {
            let mut chunk = vec![0; CHUNK];
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            chunk.truncate(n);
            if held.send((Instant::now(), chunk)).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((arrived, chunk)) = due.recv().await {
            passable(&mut link, arrived).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(drop)
}

/// Returns once a chunk that arrived at `arrived` may pass.
async fn passable(link: &mut watch::Receiver<Link>, arrived: Instant) {
    loop {
        let current = *link.borrow_and_update();
        let wait = match current {
            Link::Open => return,
            Link::Delayed(delay) if Instant::now() >= arrived + delay => return,
            Link::Delayed(delay) => Some(arrived + delay),
            Link::Stalled => None,
        };
        let changed = async {
            match wait {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => Ok(()),
                    changed = link.changed() => changed,
                },
                None => link.changed().await,
            }
        };
        // The proxy is gone: nothing will change the link any more.
        if changed.await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Link, TcpProxy};
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

    #[tokio::test]
    async fn a_delayed_link_holds_every_chunk_and_a_stalled_one_holds_all_until_it_opens() {
        let proxy = TcpProxy::start(echo_server().await).await.expect("proxy");
        let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut socket, b"warm").await.is_some());

        let delay = Duration::from_millis(150);
        proxy.set_link(Link::Delayed(delay));
        let began = tokio::time::Instant::now();
        assert!(round_trip(&mut socket, b"slow").await.is_some());
        assert!(
            began.elapsed() >= 2 * delay,
            "both directions are delayed: {:?}",
            began.elapsed()
        );

        proxy.set_link(Link::Stalled);
        socket.write_all(b"held").await.expect("write");
        let mut echoed = [0; 4];
        assert!(
            timeout(Duration::from_millis(300), socket.read_exact(&mut echoed))
                .await
                .is_err(),
            "nothing passes a stalled link"
        );
        proxy.set_link(Link::Open);
        timeout(WAIT, socket.read_exact(&mut echoed))
            .await
            .expect("passes once open")
            .expect("read");
        assert_eq!(&echoed, b"held");
    }
}
