//! The guarantees of streamed replies (CONTRACT §14), judged like every other in
//! [`super::judge`]: every reply that was stored ends exactly once, as one later version
//! with its own seq; nothing stays `streaming`; every append its writer saw acked is in
//! the final text at its offset; an end the writer saw acked is the stored one.
//!
//! A reply whose start was never acked (its socket went away first) may or may not be
//! stored; if it is, it must have ended all the same (rule 3: its node, or whichever
//! node finds it abandoned, ends it `interrupted`).

use super::{StoredRow, World};
use crate::load::SentReply;

impl World<'_> {
    /// §14 rules 1–4 for every reply of the report; one line per violation.
    pub(super) fn replies(&self) -> Vec<String> {
        let mut out = Vec::new();
        for reply in &self.report.replies {
            let stored = self
                .by_cmid
                .get(&(reply.user_id, reply.client_message_id))
                .and_then(|rows| rows.first());
            match (stored, reply.id) {
                (None, Some(id)) => out.push(format!(
                    "{}: reply {id} (cmid {}) was acked at its start and is not stored",
                    reply.client, reply.client_message_id
                )),
                (None, None) => {}
                (Some(row), _) => self.judge_reply(reply, row, &mut out),
            }
        }
        out
    }

    fn judge_reply(&self, reply: &SentReply, row: &StoredRow, out: &mut Vec<String>) {
        let who = format!("{}: reply {} (seq {})", reply.client, row.id, row.seq);
        if reply.id.is_some_and(|id| id != row.id) || reply.start_seq.is_some_and(|s| s != row.seq)
        {
            out.push(format!(
                "{who}: its start was acked as {:?} at seq {:?}",
                reply.id, reply.start_seq
            ));
        }
        if row.status == "streaming" {
            out.push(format!("{who} is still streaming after the drain"));
        }
        let versions = self.versions.get(&row.id).map_or(&[][..], Vec::as_slice);
        match versions {
            [version] => {
                if version.seq <= row.seq
                    || version.content != row.content
                    || version.status != row.status
                {
                    out.push(format!(
                        "{who}: its end is seq {} ({}, {} chars), the message reads {} ({} chars)",
                        version.seq,
                        version.status,
                        version.content.chars().count(),
                        row.status,
                        row.content.chars().count()
                    ));
                }
            }
            others => out.push(format!("{who} ended {} times, not once", others.len())),
        }
        if row.status == "complete" && row.content.is_empty() {
            out.push(format!("{who} is complete and empty"));
        }
        out.extend(lost_appends(reply, row).map(|lost| format!("{who}: {lost}")));
        if let Some(end) = &reply.end
            && (end.status != row.status || end.content != row.content)
        {
            out.push(format!(
                "{who}: its end was acked as {} ({} chars), stored as {} ({} chars)",
                end.status,
                end.content.chars().count(),
                row.status,
                row.content.chars().count()
            ));
        }
    }
}

/// Every append of `reply` acked to its writer whose text is not at its offset in the
/// stored text (rule 4).
fn lost_appends<'r>(reply: &'r SentReply, row: &'r StoredRow) -> impl Iterator<Item = String> + 'r {
    let text: Vec<char> = row.content.chars().collect();
    reply
        .appends
        .iter()
        .filter(|a| a.acked_at.is_some())
        .filter_map(move |append| {
            let piece: Vec<char> = append.text.chars().collect();
            let at = text.get(append.offset..append.offset + piece.len());
            (at != Some(piece.as_slice())).then(|| {
                format!(
                    "the append at offset {} ({:?}, acked at {:?} ms) is not in the final text \
                     ({} chars, {})",
                    append.offset,
                    append.text,
                    append.acked_at,
                    text.len(),
                    row.status
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use super::super::judge;
    use crate::checker::StoredRow;
    use crate::load::{EndAcked, LoadReport, Progress, SentAppend, SentReply};
    use coachwire_shared::ids::{ClientMessageId, ConversationId, MessageId, UserId};
    use uuid::Uuid;

    /// A reply of two acked appends, ended `complete`, stored as seq 1 and its end as 2.
    fn ended_reply() -> (LoadReport, Vec<StoredRow>) {
        let (coach, conversation) = (UserId(Uuid::new_v4()), ConversationId(Uuid::new_v4()));
        let cmid = ClientMessageId(Uuid::now_v7());
        let id = MessageId::derive(coach, cmid);
        let append = |offset, text: &str| SentAppend {
            offset,
            text: text.into(),
            acked_at: Some(1.0),
            length: Some(offset + text.len()),
            attempts: vec![(1.0, "ok".into())],
        };
        let reply = SentReply {
            client_message_id: cmid,
            client: "c0ai".into(),
            user_id: coach,
            conversation_id: conversation,
            start_attempts: vec![(0.0, "ok".into())],
            id: Some(id),
            start_seq: Some(1),
            start_status: Some("streaming".into()),
            start_ack_at: Some(0.0),
            appends: vec![append(0, "hello "), append(6, "world")],
            end_attempts: vec![(2.0, "ok".into())],
            end: Some(EndAcked {
                at: 2.0,
                status: "complete".into(),
                content: "hello world".into(),
            }),
            over: Some("ended".into()),
        };
        let row = StoredRow {
            id,
            conversation_id: conversation,
            user_id: coach,
            client_message_id: Some(cmid),
            seq: 1,
            content: "hello world".into(),
            status: "complete".into(),
            version_of: None,
        };
        let version = StoredRow {
            id: id.later_version(),
            seq: 2,
            version_of: Some(id),
            ..row.clone()
        };
        let report = LoadReport {
            timed_out: false,
            settle_ms: 0.0,
            counts: Progress::default(),
            clients: vec![],
            messages: vec![],
            replies: vec![reply],
        };
        (report, vec![row, version])
    }

    fn replies_evidence(report: &LoadReport, rows: &[StoredRow]) -> String {
        let verdict = judge(report, rows);
        assert_eq!(
            verdict.violations.values().sum::<usize>(),
            verdict.violations["replies"],
            "only the replies check may fail here: {}",
            verdict.evidence
        );
        verdict.evidence
    }

    #[test]
    fn an_ended_reply_and_its_version_pass_every_check() {
        let (report, rows) = ended_reply();
        assert_eq!(replies_evidence(&report, &rows), "");
    }

    #[test]
    fn an_acked_append_missing_from_the_final_text_is_reported() {
        let (report, mut rows) = ended_reply();
        for row in &mut rows {
            row.content = "hello ".into();
        }
        let evidence = replies_evidence(&report, &rows);
        assert!(evidence.contains("offset 6 (\"world\""), "{evidence}");
        assert!(
            evidence.contains("its end was acked as complete (11 chars)"),
            "{evidence}"
        );
    }

    #[test]
    fn a_reply_left_streaming_or_ended_twice_is_reported() {
        let (report, mut rows) = ended_reply();
        rows.truncate(1);
        rows[0].status = "streaming".into();
        let evidence = replies_evidence(&report, &rows);
        assert!(evidence.contains("still streaming"), "{evidence}");
        assert!(evidence.contains("ended 0 times"), "{evidence}");
    }
}
