//! `POST /api/conversations`, `GET /api/conversations` and
//! `DELETE /api/conversations/{id}/participants/me`.

use super::messages::path_conversation;
use super::{ApiError, JsonBody, int_param};
use crate::app::AppRef;
use crate::auth::{Principal, Role};
use crate::events::db_unavailable;
use crate::queries;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coachwire_shared::envelope::{Origin, Presence, RoomEvent};
use coachwire_shared::error::{Detail, Failure};
use coachwire_shared::ids::UserId;
use coachwire_shared::message::{CreateConversationPayload, MAX_PARTICIPANTS};
use coachwire_shared::replies::{
    ConversationList, DEFAULT_CONVERSATIONS_LIMIT, MAX_CONVERSATIONS_LIMIT,
};
use std::collections::HashMap;

pub async fn create(
    State(app): State<AppRef>,
    principal: Principal,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = app
        .validators
        .create_conversation
        .parse(&body)
        .map_err(Failure::validation)?;
    let participants = participants(principal.user, &request)?;
    if principal.role == Role::User {
        app.limits.conversation(principal.user)?;
    }
    let conversation =
        queries::create_conversation(&app.pool, principal.user, request.title, participants)
            .await
            .map_err(db_unavailable)?;
    Ok((StatusCode::CREATED, Json(conversation)).into_response())
}

/// Everyone in the new conversation, the caller included, each once: at most
/// [`MAX_PARTICIPANTS`] (§8).
fn participants(
    creator: UserId,
    request: &CreateConversationPayload,
) -> Result<Vec<UserId>, Failure> {
    let mut everyone: Vec<UserId> = request
        .participant_ids
        .iter()
        .filter_map(|p| UserId::parse(&p.0))
        .chain([creator])
        .collect();
    everyone.sort();
    everyone.dedup();
    if everyone.len() > MAX_PARTICIPANTS {
        return Err(Failure::validation(vec![Detail::new(
            "/participantIds",
            format!(
                "a conversation has at most {MAX_PARTICIPANTS} participants, the caller included"
            ),
        )]));
    }
    Ok(everyone)
}

/// 204: the caller has left the conversation for good. Every node takes the caller's
/// sockets out of its room and tells the others `user_left` (`rooms::room`).
pub async fn leave(
    State(app): State<AppRef>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let conversation = path_conversation(&id)?;
    let left = queries::leave_conversation(&app.pool, conversation, principal.user)
        .await
        .map_err(db_unavailable)?;
    if !left {
        return Err(Failure::forbidden().into());
    }
    let departed = Presence {
        conversation_id: conversation,
        user_id: principal.user,
        // No socket sent it: every socket left in the room hears `user_left`.
        origin: Origin {
            node: app.node.clone(),
            sid: String::new(),
        },
    };
    app.rooms
        .publish(conversation, &RoomEvent::Departed(departed))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `{ conversations, nextCursor? }`: the caller's conversations, newest activity first.
pub async fn list(
    State(app): State<AppRef>,
    principal: Principal,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = int_param(
        &query,
        "limit",
        DEFAULT_CONVERSATIONS_LIMIT,
        1,
        MAX_CONVERSATIONS_LIMIT,
    )?;
    let after = query.get("cursor").map(|c| cursor::decode(c)).transpose()?;
    let (conversations, next) = queries::conversations_of(&app.pool, principal.user, after, limit)
        .await
        .map_err(db_unavailable)?;
    let body = ConversationList {
        conversations,
        next_cursor: next.map(cursor::encode),
    };
    Ok(Json(body).into_response())
}

/// The opaque `nextCursor`: the last listed conversation's activity time and id, which is
/// where the keyset scan resumes. Clients only hand it back.
mod cursor {
    use crate::queries::ActivityCursor;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use chrono::Datelike;
    use coachwire_shared::error::{Detail, Failure};
    use coachwire_shared::ids::ConversationId;
    use std::ops::RangeInclusive;

    /// Years every `timestamptz` can hold (Postgres: 4713 BC to 294276 AD), with margin:
    /// a forged cursor outside them would be refused by the database and answered as an
    /// outage, where it is the client's bad input (§8).
    const STORABLE_YEARS: RangeInclusive<i32> = 1..=9999;

    pub fn encode(at: ActivityCursor) -> String {
        let raw = format!(
            "{}.{}",
            at.last_activity_at.timestamp_micros(),
            at.conversation
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(text: &str) -> Result<ActivityCursor, Failure> {
        let invalid = || {
            Failure::validation(vec![Detail::new(
                "/cursor",
                "is not a cursor this server issued",
            )])
        };
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let (micros, id) = raw.split_once('.').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let at = chrono::DateTime::from_timestamp_micros(micros)
            .filter(|at| STORABLE_YEARS.contains(&at.year()))
            .ok_or_else(invalid)?;
        Ok(ActivityCursor {
            last_activity_at: at,
            conversation: ConversationId::parse(id).ok_or_else(invalid)?,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_cursor_survives_the_round_trip_and_garbage_is_refused() {
            let at = ActivityCursor {
                last_activity_at: chrono::DateTime::from_timestamp_micros(1_764_000_000_123_456)
                    .expect("time"),
                conversation: ConversationId(uuid::Uuid::new_v4()),
            };
            assert_eq!(decode(&encode(at)).ok(), Some(at));
            let id = ConversationId(uuid::Uuid::nil());
            let past_postgres = URL_SAFE_NO_PAD.encode(format!("{}.{id}", i64::MAX));
            let before_postgres = URL_SAFE_NO_PAD.encode(format!("{}.{id}", i64::MIN / 2));
            for bad in [
                "",
                "!!",
                "bm9wZQ",
                &URL_SAFE_NO_PAD.encode("12.not-a-uuid"),
                &past_postgres,
                &before_postgres,
            ] {
                assert!(decode(bad).is_err(), "{bad:?} is refused");
            }
        }
    }
}
