//! The public listener: the router served by hyper with the limits `axum::serve` lacks.
//!
//! `axum::serve` sets no timer, so hyper's header-read timeout never fires: a client that
//! never finishes its request headers holds a connection and a file descriptor forever,
//! and a few hundred of them lock everyone out (slowloris). Here every connection:
//! - must deliver each request's headers within [`HEADER_READ_TIMEOUT`], which also bounds
//!   how long a keep-alive connection may sit idle between requests;
//! - counts against [`MAX_CONNECTIONS_PER_IP`] open connections from its peer address,
//!   unless a proxy is trusted (then every client shares the proxy's address);
//! - has Nagle off: acks are small writes, and with it on they wait for delayed ACKs;
//! - hands a request that opens a Socket.IO session over detached from hyper's read
//!   buffer (`socket::parts`).
//!
//! Bodies get their own deadline where they are read (`http::JsonBody`); an upgraded
//! WebSocket leaves hyper and is bounded by Engine.IO's ping timeout instead.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Time a client has to send a request's headers, and the longest idle keep-alive gap.
/// Real clients send headers in one segment; 10 s is generous on a bad mobile link.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections one peer address may hold. A household or office behind one NAT
/// opens a few dozen at most (a socket and a few requests per tab); 256 leaves room for
/// that while keeping a single host from taking every file descriptor.
pub const MAX_CONNECTIONS_PER_IP: usize = 256;
/// Pause after a failed `accept` (out of file descriptors, most likely) before the next,
/// so the loop does not spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long shutdown waits for HTTP requests in flight once the sockets are closed.
const FINISH_REQUESTS_WITHIN: Duration = Duration::from_secs(3);

/// Whether connections are capped per peer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerCap {
    PerIp(usize),
    /// Behind a trusted proxy every connection comes from the proxy.
    None,
}

/// Serves `router` on `listener` until `shutdown` completes, then waits (boundedly) for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cap: PeerCap,
    shutdown: impl Future<Output = ()>,
) {
    let builder = builder();
    let graceful = GracefulShutdown::new();
    let open = OpenConnections::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = open.admit(peer.ip(), cap) else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            continue;
        };
        spawn_connection(&builder, &graceful, tcp, peer, router.clone(), slot);
    }
    drop(listener);
    if tokio::time::timeout(FINISH_REQUESTS_WITHIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP requests still open at shutdown");
    }
}

fn builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serves one connection in its own task; its [`Slot`] is given back when it closes.
fn spawn_connection(
    builder: &Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    slot: Slot,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY failed");
    }
    let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
        // Before the router: a session keeps its request's parts for its whole life.
        let mut request = crate::socket::parts::detached(request);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
        .into_owned();
    let watched = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = watched.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        drop(slot);
    });
}

/// Open connections per peer address; a [`Slot`] gives its place back when dropped.
#[derive(Clone, Default)]
struct OpenConnections(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct Slot {
    open: OpenConnections,
    ip: IpAddr,
}

impl OpenConnections {
    fn admit(&self, ip: IpAddr, cap: PeerCap) -> Option<Slot> {
        let mut open = self.lock();
        let count = open.entry(ip).or_default();
        if let PeerCap::PerIp(max) = cap
            && *count >= max
        {
            return None;
        }
        *count += 1;
        Some(Slot {
            open: self.clone(),
            ip,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_cap_and_a_closed_connection_frees_its_place() {
        let open = OpenConnections::default();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let held: Vec<Slot> = (0..3)
            .map(|_| open.admit(a, PeerCap::PerIp(3)).expect("within the cap"))
            .collect();
        assert!(open.admit(a, PeerCap::PerIp(3)).is_none(), "past the cap");
        assert!(
            open.admit(b, PeerCap::PerIp(3)).is_some(),
            "another address"
        );
        drop(held);
        assert!(open.lock().is_empty(), "closed connections leave no entry");
        assert!(open.admit(a, PeerCap::PerIp(3)).is_some());
        assert!((0..1000).all(|_| open.admit(a, PeerCap::None).is_some()));
    }
}
