//! A message of the stream on its way to Postgres, and how (whether) it is acked.
//!
//! Most come from the partition's consumer and are acked once stored and published. A
//! batch that follows a gap in the consumer's deliveries is completed from the stream
//! itself ([`crate::gap`]): the messages read there have no delivery to ack; the
//! consumer's own delivery of each comes later, is stored as the duplicate it is, and is
//! acked then.

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;

#[expect(
    clippy::large_enum_variant,
    reason = "the large variant is every delivery; boxing it would allocate per message"
)]
pub enum Pulled {
    /// Delivered by the partition's consumer.
    Delivered(Message),
    /// Read from the stream to fill a gap in the deliveries.
    Read(StreamMessage),
}

impl Pulled {
    /// Its position in the stream, `None` for a delivery whose reply subject is malformed.
    pub fn stream_sequence(&self) -> Option<u64> {
        match self {
            Pulled::Delivered(message) => message.info().ok().map(|i| i.stream_sequence),
            Pulled::Read(message) => Some(message.sequence),
        }
    }

    pub fn payload(&self) -> &Bytes {
        match self {
            Pulled::Delivered(message) => &message.payload,
            Pulled::Read(message) => &message.payload,
        }
    }

    pub fn headers(&self) -> Option<&HeaderMap> {
        match self {
            Pulled::Delivered(message) => message.headers.as_ref(),
            Pulled::Read(message) => Some(&message.headers),
        }
    }

    /// Acks the delivery with `kind`; a message read from the stream has none to ack.
    pub async fn ack_with(&self, kind: AckKind) -> Result<(), async_nats::Error> {
        match self {
            Pulled::Delivered(message) => message.ack_with(kind).await,
            Pulled::Read(_) => Ok(()),
        }
    }
}

impl From<Message> for Pulled {
    fn from(message: Message) -> Self {
        Pulled::Delivered(message)
    }
}
