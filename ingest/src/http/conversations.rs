//! `POST /api/conversations` and `GET /api/conversations`.

use super::{ApiError, JsonBody, int_param};
use crate::app::AppRef;
use crate::auth::Principal;
use crate::db;
use crate::events::db_unavailable;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coachwire_shared::error::Failure;
use coachwire_shared::ids::UserId;
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
    let participants = request
        .participant_ids
        .iter()
        .filter_map(|p| UserId::parse(&p.0))
        .collect();
    let conversation =
        db::create_conversation(&app.pool, principal.user, request.title, participants)
            .await
            .map_err(db_unavailable)?;
    Ok((StatusCode::CREATED, Json(conversation)).into_response())
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
    let (conversations, next) = db::conversations_of(&app.pool, principal.user, after, limit)
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
    use crate::db::ActivityCursor;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use coachwire_shared::error::{Detail, Failure};
    use coachwire_shared::ids::ConversationId;

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
        Ok(ActivityCursor {
            last_activity_at: chrono::DateTime::from_timestamp_micros(micros)
                .ok_or_else(invalid)?,
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
            for bad in ["", "!!", "bm9wZQ", &URL_SAFE_NO_PAD.encode("12.not-a-uuid")] {
                assert!(decode(bad).is_err(), "{bad:?} is refused");
            }
        }
    }
}
