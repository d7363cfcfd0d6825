//! `GET` and `POST /api/conversations/{id}/messages`.

use super::{ApiError, JsonBody, int_param};
use crate::accept::Draft;
use crate::app::AppRef;
use crate::auth::Principal;
use crate::events::message::{authorize, limit};
use crate::events::{db_unavailable, sync::history};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coachwire_shared::db;
use coachwire_shared::error::{Detail, Failure};
use coachwire_shared::ids::{ConversationId, Seq};
use coachwire_shared::message::{DEFAULT_SYNC_LIMIT, MAX_SYNC_LIMIT};
use std::collections::HashMap;

pub async fn list(
    State(app): State<AppRef>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let conversation = path_conversation(&id)?;
    let after = int_param(&query, "afterSeq", 0, 0, i64::MAX)?;
    let limit = int_param(&query, "limit", DEFAULT_SYNC_LIMIT, 1, MAX_SYNC_LIMIT)?;
    let page = history(&app.pool, principal.user, conversation, Seq(after), limit).await?;
    Ok(Json(page).into_response())
}

pub async fn post(
    State(app): State<AppRef>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    let conversation = path_conversation(&id)?;
    if let Some(object) = body.as_object_mut() {
        let given = object
            .entry("conversationId")
            .or_insert_with(|| conversation.to_string().into());
        if given.as_str().and_then(ConversationId::parse) != Some(conversation) && given.is_string()
        {
            return Err(Failure::validation(vec![Detail::new(
                "/conversationId",
                "must equal the conversation in the path",
            )])
            .into());
        }
    }
    let request = app
        .validators
        .message
        .parse(&body)
        .map_err(Failure::validation)?;
    let draft = Draft::try_from(request)?;
    authorize(principal, &draft)?;
    limit(&app, principal)?;
    let allowed = db::is_participant(&app.pool, conversation, principal.user)
        .await
        .map_err(db_unavailable)?;
    if !allowed {
        return Err(Failure::forbidden().into());
    }
    let accepted = app
        .acceptor
        .accept(principal.user, draft, None, None)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

fn path_conversation(id: &str) -> Result<ConversationId, ApiError> {
    ConversationId::parse(id).ok_or_else(|| {
        Failure::validation(vec![Detail::new("/conversationId", "must be a UUID")]).into()
    })
}
