//! `GET` and `POST /api/conversations/{id}/messages`.

use super::{ApiError, JsonBody, int_param};
use crate::accept::{Draft, record_outcome};
use crate::app::AppRef;
use crate::auth::Principal;
use crate::events::message::{authorize, limit};
use crate::events::{db_unavailable, sync::history};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use coachwire_shared::db;
use coachwire_shared::error::{Detail, Failure};
use coachwire_shared::ids::{ConversationId, Seq};
use coachwire_shared::message::{DEFAULT_SYNC_LIMIT, MAX_SYNC_LIMIT};
use coachwire_shared::replies::MessageAck;
use coachwire_shared::telemetry::propagation;
use std::collections::HashMap;
use tracing::{Instrument, Span, field::Empty};

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

/// Continues the caller's `traceparent`, so the message's trace joins the caller's.
pub async fn post(
    State(app): State<AppRef>,
    headers: HeaderMap,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let span = tracing::debug_span!(
        "POST /api/conversations/{id}/messages",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/api/conversations/{id}/messages",
        http.response.status_code = Empty,
        coachwire.conversation_id = Empty,
        coachwire.message_id = Empty,
        coachwire.outcome = Empty,
        coachwire.error_code = Empty,
        otel.status_code = Empty,
    );
    propagation::continue_from_http(&span, &headers);
    let outcome = submit(&app, principal, &id, body)
        .instrument(span.clone())
        .await;
    record_outcome(&span, &outcome);
    let status = match &outcome {
        Ok(_) => StatusCode::ACCEPTED.as_u16(),
        Err(failure) => failure.code.http_status(),
    };
    span.record("http.response.status_code", status);
    let accepted = outcome?;
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

async fn submit(
    app: &AppRef,
    principal: Principal,
    id: &str,
    mut body: serde_json::Value,
) -> Result<MessageAck, Failure> {
    let conversation = path_conversation(id)?;
    Span::current().record(
        "coachwire.conversation_id",
        tracing::field::display(conversation),
    );
    if let Some(object) = body.as_object_mut() {
        let given = object
            .entry("conversationId")
            .or_insert_with(|| conversation.to_string().into());
        if given.as_str().and_then(ConversationId::parse) != Some(conversation) && given.is_string()
        {
            return Err(Failure::validation(vec![Detail::new(
                "/conversationId",
                "must equal the conversation in the path",
            )]));
        }
    }
    let request = app
        .validators
        .message
        .parse(&body)
        .map_err(Failure::validation)?;
    let draft = Draft::try_from(request)?;
    authorize(principal, &draft)?;
    limit(app, principal)?;
    let allowed = db::is_participant(&app.pool, conversation, principal.user)
        .await
        .map_err(db_unavailable)?;
    if !allowed {
        return Err(Failure::forbidden());
    }
    app.acceptor.accept(principal.user, draft, None, None).await
}

pub(super) fn path_conversation(id: &str) -> Result<ConversationId, Failure> {
    ConversationId::parse(id)
        .ok_or_else(|| Failure::validation(vec![Detail::new("/conversationId", "must be a UUID")]))
}
