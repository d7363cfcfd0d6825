//! Per-socket send order. socketioxide runs each event's handler in its own task, so two
//! `message`s of one socket race to the publish and may be stored out of order. Tickets
//! are drawn in the extractor, which socketioxide runs synchronously in packet order; a
//! handler publishes only when every earlier ticket of its socket has published or given
//! up. Only the publish is serialized: PubAcks are still awaited concurrently.

use socketioxide::adapter::LocalAdapter;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Kept in the socket's extensions.
#[derive(Clone)]
pub struct SendOrder(Arc<Inner>);

struct Inner {
    issued: AtomicU64,
    /// Tickets finished out of turn, waiting for the ones before them.
    done: Mutex<(u64, BTreeSet<u64>)>,
    /// The ticket whose turn it is.
    turn: watch::Sender<u64>,
}

impl Default for SendOrder {
    fn default() -> Self {
        Self(Arc::new(Inner {
            issued: AtomicU64::new(0),
            done: Mutex::new((0, BTreeSet::new())),
            turn: watch::Sender::new(0),
        }))
    }
}

/// A place in the socket's send order; dropping it lets the next one go.
pub struct Ticket {
    order: Option<SendOrder>,
    number: u64,
}

impl Ticket {
    /// Resolves when every earlier ticket of this socket is done.
    pub async fn wait_turn(&self) {
        if let Some(order) = &self.order {
            let mut turn = order.0.turn.subscribe();
            let _ = turn.wait_for(|t| *t >= self.number).await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(order) = &self.order else { return };
        let mut done = order.0.done.lock().unwrap_or_else(|p| p.into_inner());
        let (next, finished) = &mut *done;
        finished.insert(self.number);
        while finished.remove(next) {
            *next += 1;
        }
        order.0.turn.send_replace(*next);
    }
}

impl FromMessageParts<LocalAdapter> for Ticket {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        _: &mut Value,
        _: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let order = s.extensions.get::<SendOrder>();
        let number = order
            .as_ref()
            .map_or(0, |o| o.0.issued.fetch_add(1, Ordering::Relaxed));
        Ok(Ticket { order, number })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(order: &SendOrder) -> Ticket {
        let number = order.0.issued.fetch_add(1, Ordering::Relaxed);
        Ticket {
            order: Some(order.clone()),
            number,
        }
    }

    #[tokio::test]
    async fn a_later_ticket_waits_for_every_earlier_one() {
        let order = SendOrder::default();
        let (first, second, third) = (ticket(&order), ticket(&order), ticket(&order));
        drop(second);
        let waiting = tokio::spawn(async move { third.wait_turn().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the first ticket is still out");
        drop(first);
        waiting
            .await
            .expect("third goes once first and second are done");
    }
}
