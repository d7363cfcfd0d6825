//! Every send sorted into one class, in the terms of the fault suite (and Jepsen's).
//!
//! The checker ([`crate::checker::judge`]) says which guarantee broke and shows the
//! evidence; this says how many operations each outcome had, which is what a soak of
//! tens of thousands of sends reports. A send is judged by its success ack (if any) and
//! by how many rows carry its `(user, clientMessageId)`; a row no send accounts for is
//! unexpected. Ordering is the checker's (ack order and stream order, §7.3), counted
//! there.

use crate::checker::StoredRow;
use crate::load::{LoadReport, SentMessage};
use coachwire_shared::ids::{ClientMessageId, MessageId, UserId};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What became of one send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendClass {
    /// Acked on its first attempt and stored once.
    StoredOnce,
    /// An attempt failed or timed out; a retry was acked and it is stored once.
    Recovered,
    /// Acked, never stored: the guarantee of §7.1 broken.
    Lost,
    /// Stored more than once.
    Duplicated,
    /// Never acked, though the client retried until the end (stored or not).
    Unacked,
}

/// How many sends (and stray rows) fell into each class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Classes {
    pub stored_once: usize,
    pub recovered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unacked: usize,
    /// Rows that no send accounts for (stored, never sent).
    pub unexpected: usize,
}

/// What the streamers did (§14): the `replies` check judges each reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Streamed {
    pub begun: usize,
    pub start_acked: usize,
    /// Stored replies by final status (`streaming` would be a broken reply).
    pub stored: BTreeMap<String, usize>,
    pub appends_acked: usize,
    /// `reply_delta` events the sockets received.
    pub deltas: u64,
}

pub fn streamed(report: &LoadReport, rows: &[StoredRow]) -> Streamed {
    let mine: HashSet<(UserId, ClientMessageId)> = report
        .replies
        .iter()
        .map(|r| (r.user_id, r.client_message_id))
        .collect();
    let mut stored = BTreeMap::new();
    for row in rows.iter().filter(|r| r.version_of.is_none()) {
        if row
            .client_message_id
            .is_some_and(|cmid| mine.contains(&(row.user_id, cmid)))
        {
            *stored.entry(row.status.clone()).or_default() += 1;
        }
    }
    Streamed {
        begun: report.replies.len(),
        start_acked: report.replies.iter().filter(|r| r.id.is_some()).count(),
        stored,
        appends_acked: report
            .replies
            .iter()
            .flat_map(|r| &r.appends)
            .filter(|a| a.acked_at.is_some())
            .count(),
        deltas: report.counts.deltas,
    }
}

/// Outcomes of an attempt that are a success ack.
const SUCCESS: [&str; 2] = ["ok", "duplicate"];

pub fn classify_send(message: &SentMessage, copies: usize) -> SendClass {
    let failed_first = message
        .attempts
        .iter()
        .any(|(_, outcome)| !SUCCESS.contains(&outcome.as_str()));
    match (message.id.is_some(), copies) {
        (_, 2..) => SendClass::Duplicated,
        (true, 0) => SendClass::Lost,
        (false, _) => SendClass::Unacked,
        (true, _) if failed_first => SendClass::Recovered,
        (true, _) => SendClass::StoredOnce,
    }
}

pub fn classify(report: &LoadReport, rows: &[StoredRow]) -> Classes {
    let mut copies: HashMap<(UserId, ClientMessageId), usize> = HashMap::new();
    for row in rows.iter().filter(|r| r.version_of.is_none()) {
        if let Some(cmid) = row.client_message_id {
            *copies.entry((row.user_id, cmid)).or_default() += 1;
        }
    }
    // A streamed reply's rows (its start, and its end: a version of a stored row) are
    // accounted for by the reply; the checker's `replies` check judges them.
    let sent: HashSet<(UserId, ClientMessageId)> = report
        .messages
        .iter()
        .map(|m| (m.user_id, m.client_message_id))
        .chain(
            report
                .replies
                .iter()
                .map(|r| (r.user_id, r.client_message_id)),
        )
        .collect();
    let stored: HashSet<MessageId> = rows.iter().map(|r| r.id).collect();
    let mut classes = Classes {
        unexpected: rows
            .iter()
            .filter(|r| !r.version_of.is_some_and(|of| stored.contains(&of)))
            .filter(|r| {
                r.client_message_id
                    .is_none_or(|cmid| !sent.contains(&(r.user_id, cmid)))
            })
            .count(),
        ..Classes::default()
    };
    for message in &report.messages {
        let n = copies
            .get(&(message.user_id, message.client_message_id))
            .copied()
            .unwrap_or(0);
        let class = match classify_send(message, n) {
            SendClass::StoredOnce => &mut classes.stored_once,
            SendClass::Recovered => &mut classes.recovered,
            SendClass::Lost => &mut classes.lost,
            SendClass::Duplicated => &mut classes.duplicated,
            SendClass::Unacked => &mut classes.unacked,
        };
        *class += 1;
    }
    classes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::load::Progress;
    use coachwire_shared::ids::ConversationId;
    use uuid::Uuid;

    /// A send by `user` created at `at` ms; `attempts` are `(ms after at, outcome)`, the
    /// last success (if any) being its ack.
    pub(crate) fn sent(user: UserId, at: f64, attempts: &[(f64, &str)]) -> SentMessage {
        let cmid = ClientMessageId(Uuid::now_v7());
        let ack_at = attempts
            .iter()
            .find(|(_, o)| SUCCESS.contains(o))
            .map(|(after, _)| at + after);
        SentMessage {
            client_message_id: cmid,
            client: "c0u0".into(),
            user_id: user,
            conversation_id: ConversationId(Uuid::nil()),
            content: format!("at {at}"),
            created_at: Some(at),
            first_send_at: Some(at),
            attempts: attempts
                .iter()
                .map(|(t, o)| (at + t, o.to_string()))
                .collect(),
            id: ack_at.map(|_| MessageId::derive(user, cmid)),
            duplicate: ack_at.map(|_| false),
            ack_at,
            ack_seq: None,
            in_flight: false,
        }
    }

    pub(crate) fn report(messages: Vec<SentMessage>) -> LoadReport {
        LoadReport {
            timed_out: false,
            settle_ms: 0.0,
            counts: Progress::default(),
            clients: Vec::new(),
            messages,
            replies: Vec::new(),
        }
    }

    fn row_of(m: &SentMessage, seq: i64) -> StoredRow {
        StoredRow {
            id: MessageId::derive(m.user_id, m.client_message_id),
            conversation_id: m.conversation_id,
            user_id: m.user_id,
            client_message_id: Some(m.client_message_id),
            seq,
            content: m.content.clone(),
            status: "complete".into(),
            version_of: None,
        }
    }

    #[test]
    fn each_send_falls_into_the_class_its_acks_and_rows_say() {
        let user = UserId(Uuid::new_v4());
        let once = sent(user, 0.0, &[(5.0, "ok")]);
        let retried = sent(user, 10.0, &[(6000.0, "timeout"), (6100.0, "duplicate")]);
        let lost = sent(user, 20.0, &[(5.0, "ok")]);
        let twice = sent(user, 30.0, &[(5.0, "ok")]);
        let never = sent(user, 40.0, &[(5.0, "UNAVAILABLE")]);
        let mut rows = vec![
            row_of(&once, 1),
            row_of(&retried, 2),
            row_of(&twice, 3),
            row_of(&twice, 4),
        ];
        let mut stray = row_of(&sent(user, 50.0, &[]), 5);
        stray.client_message_id = Some(ClientMessageId(Uuid::new_v4()));
        rows.push(stray);
        let classes = classify(&report(vec![once, retried, lost, twice, never]), &rows);
        assert_eq!(
            classes,
            Classes {
                stored_once: 1,
                recovered: 1,
                lost: 1,
                duplicated: 1,
                unacked: 1,
                unexpected: 1,
            }
        );
    }

    #[test]
    fn a_send_stored_but_never_acked_is_unacked_not_lost() {
        let user = UserId(Uuid::new_v4());
        let m = sent(user, 0.0, &[(6000.0, "timeout")]);
        assert_eq!(classify_send(&m, 1), SendClass::Unacked);
        assert_eq!(classify_send(&m, 0), SendClass::Unacked);
    }

    #[test]
    fn a_later_version_of_a_stored_row_is_no_stray_and_one_of_nothing_is() {
        let user = UserId(Uuid::new_v4());
        let once = sent(user, 0.0, &[(5.0, "ok")]);
        let row = row_of(&once, 1);
        let version = |of: MessageId, seq| StoredRow {
            id: of.later_version(),
            client_message_id: None,
            seq,
            version_of: Some(of),
            ..row.clone()
        };
        let rows = vec![
            version(row.id, 2),
            version(MessageId(Uuid::new_v4()), 3),
            row.clone(),
        ];
        let classes = classify(&report(vec![once]), &rows);
        assert_eq!((classes.stored_once, classes.unexpected), (1, 1));
    }
}
