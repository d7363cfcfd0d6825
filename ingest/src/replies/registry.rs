//! The replies being written through this node: who writes each, its text so far, and
//! when it last grew. Only the socket that started a reply may append to it or end it,
//! and that socket is on this node, so the text so far is known here exactly.

use coachwire_shared::ids::{ConversationId, MessageId};
use coachwire_shared::message::Message;
use coachwire_shared::metrics::REPLIES_STREAMING;
use coachwire_shared::replies::ReplyStopNotice;
use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

/// A reply between its start and its end.
#[derive(Debug)]
pub struct Reply {
    /// The reply as started: status `streaming`, content empty.
    pub message: Message,
    /// The socket that started it, the only one that may append to it or end it.
    pub author: Sid,
    /// Every acked append, in offset order.
    pub text: String,
    /// `text` in Unicode scalar values: what offsets count.
    pub length: u64,
    pub last_append: Instant,
    /// When someone asked it to stop: its end is then `cancelled`.
    pub stopped_at: Option<Instant>,
    pub writing: Writing,
}

/// Whether a reply still takes appends: a request that waited for the lock while the
/// reply ended finds `Ended` and changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writing {
    Open,
    Ended,
}

impl Reply {
    pub fn new(message: Message, author: Sid) -> Self {
        Self {
            message,
            author,
            text: String::new(),
            length: 0,
            last_append: Instant::now(),
            stopped_at: None,
            writing: Writing::Open,
        }
    }

    pub fn conversation(&self) -> ConversationId {
        self.message.conversation_id
    }
}

/// A reply and the lock that orders what happens to it.
pub type Held = Arc<tokio::sync::Mutex<Reply>>;

struct Entry {
    author: Sid,
    reply: Held,
}

#[derive(Clone, Default)]
pub struct Replies(Arc<Mutex<HashMap<MessageId, Entry>>>);

impl Replies {
    /// Registers a reply just started; a retried start finds the one already there.
    pub fn insert(&self, reply: Reply) -> Held {
        let mut replies = self.lock();
        let author = reply.author;
        let id = reply.message.id;
        let held = replies
            .entry(id)
            .or_insert_with(|| Entry {
                author,
                reply: Arc::new(tokio::sync::Mutex::new(reply)),
            })
            .reply
            .clone();
        metrics::gauge!(REPLIES_STREAMING).set(replies.len() as f64);
        held
    }

    /// The reply `id`, if socket `author` writes it here.
    pub fn written_by(&self, id: MessageId, author: Sid) -> Option<Held> {
        self.lock()
            .get(&id)
            .filter(|entry| entry.author == author)
            .map(|entry| entry.reply.clone())
    }

    pub fn get(&self, id: MessageId) -> Option<Held> {
        self.lock().get(&id).map(|entry| entry.reply.clone())
    }

    pub fn remove(&self, id: MessageId) {
        let mut replies = self.lock();
        replies.remove(&id);
        metrics::gauge!(REPLIES_STREAMING).set(replies.len() as f64);
    }

    /// The replies socket `author` is writing (to end them when it goes).
    pub fn of_socket(&self, author: Sid) -> Vec<(MessageId, Held)> {
        self.lock()
            .iter()
            .filter(|(_, entry)| entry.author == author)
            .map(|(id, entry)| (*id, entry.reply.clone()))
            .collect()
    }

    pub fn all(&self) -> Vec<(MessageId, Held)> {
        self.lock()
            .iter()
            .map(|(id, entry)| (*id, entry.reply.clone()))
            .collect()
    }

    /// Someone asked reply `id` to stop: if this node writes it, its author hears
    /// `reply_stop` and the stop grace starts (§14). Done on a task of its own, so the room
    /// that heard it never waits for the reply's lock.
    pub fn stop(&self, io: &SocketIo, notice: ReplyStopNotice) {
        let Some(held) = self.get(notice.id) else {
            return;
        };
        let io = io.clone();
        tokio::spawn(async move {
            let mut reply = held.lock().await;
            if reply.writing == Writing::Ended || reply.conversation() != notice.conversation_id {
                return;
            }
            reply.stopped_at.get_or_insert_with(Instant::now);
            if let Some(author) = crate::socket::connected(&io, reply.author)
                && let Err(e) = author.emit("reply_stop", &notice)
            {
                tracing::debug!(error = %e, "reply_stop not delivered to its author");
            }
        });
    }

    pub fn contains(&self, id: MessageId) -> bool {
        self.lock().contains_key(&id)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<MessageId, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
