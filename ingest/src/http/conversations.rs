//! `POST /api/conversations` and `GET /api/conversations`.

use super::{ApiError, JsonBody};
use crate::app::AppRef;
use crate::auth::Principal;
use crate::db;
use crate::events::db_unavailable;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coachwire_shared::error::Failure;
use coachwire_shared::ids::UserId;
use serde_json::json;

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

pub async fn list(State(app): State<AppRef>, principal: Principal) -> Result<Response, ApiError> {
    let conversations = db::conversations_of(&app.pool, principal.user)
        .await
        .map_err(db_unavailable)?;
    Ok(Json(json!({ "conversations": conversations })).into_response())
}
