//! `/api/v1/chat`: the internal chat as the token's user has it, with the
//! same rules as SIP MESSAGE (agents write in their groups, supervisors in
//! the groups that report to them, owners and admins everywhere; a private
//! conversation is readable by its two parties only).

use super::{json_body, query, ApiState, Peer, Problem, Viewer};
use crate::chat::queries::ChatQuery;
use crate::control::Command;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// 404 unless `peer` is a user or group of the viewer's account.
fn known_peer(s: &ApiState, v: &Viewer, peer: &str) -> Result<(), Problem> {
    let config = s.config.load();
    let known = config
        .account(&v.domain)
        .is_some_and(|a| a.user(peer).is_some() || a.group(peer).is_some());
    if known {
        Ok(())
    } else {
        Err(Problem::not_found(&format!("no user or group {peer}")))
    }
}

/// Runs a read-side chat query for the viewer; a refusal is 403.
async fn ask(s: &ApiState, query: ChatQuery) -> Result<Value, Problem> {
    s.ask(|reply| Command::Chat { query, reply })
        .await?
        .map_err(|e| Problem::forbidden(&e))
}

fn aor(v: &Viewer) -> String {
    format!("{}@{}", v.ext, v.domain)
}

#[utoipa::path(get, path = "/api/v1/chat", tag = "chat",
    responses((status = 200, body = crate::api::openapi::Conversations), (status = 401, response = crate::api::openapi::ProblemReply)))]
/// `GET /chat`: each conversation with unread count and last message id,
/// and whether the user muted notifications.
pub(super) async fn conversations(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let unread = ask(&s, ChatQuery::Unread { user: aor(&v) }).await?;
    let muted = s.ask(|reply| Command::ChatMuted { user: aor(&v), reply }).await?;
    Ok(Json(json!({ "conversations": unread, "muted": muted })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    limit: Option<usize>,
    /// Messages before this id (the oldest of the previous page).
    #[serde(default)]
    before: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/chat/{peer}", tag = "chat",
    params(("peer" = String, Path, description = "a user's extension or a group's number"), HistoryQuery),
    responses((status = 200, body = crate::api::openapi::ChatHistory), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply)))]
/// `GET /chat/{peer}?limit&before`: messages with a user or in a group,
/// oldest first, the newest `limit` before `before`.
pub(super) async fn history(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(peer): Path<String>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let q = query(q)?;
    known_peer(&s, &v, &peer)?;
    let messages = ask(
        &s,
        ChatQuery::History {
            user: aor(&v),
            peer,
            limit: q.limit.unwrap_or(50).clamp(1, 500),
            before: q.before,
        },
    )
    .await?;
    Ok(Json(json!({ "messages": messages })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = ChatText)]
#[serde(deny_unknown_fields)]
pub(super) struct Send {
    text: String,
}

#[utoipa::path(post, path = "/api/v1/chat/{peer}", tag = "chat",
    params(("peer" = String, Path, description = "a user's extension or a group's number")), request_body = Send,
    responses((status = 201, body = crate::chat::ChatMessage), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply), (status = 413, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply), (status = 429, response = crate::api::openapi::ProblemReply)))]
/// `POST /chat/{peer}` `{"text": …}`: 201 and the stored message, pushed
/// to the recipients' phones like a MESSAGE.
pub(super) async fn send(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(peer): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let Send { text } = json_body(&body)?;
    known_peer(&s, &v, &peer)?;
    if text.trim().is_empty() {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "text: empty"));
    }
    let user = aor(&v);
    let message = s
        .ask(|reply| Command::ChatSend {
            user,
            to: peer,
            text,
            reply,
        })
        .await?
        .map_err(|(code, why)| {
            // What a MESSAGE would have been answered, in HTTP terms.
            let status = match code {
                403 => StatusCode::FORBIDDEN,
                404 => StatusCode::NOT_FOUND,
                413 => StatusCode::PAYLOAD_TOO_LARGE,
                486 => StatusCode::CONFLICT,
                503 => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Problem::new(
                status,
                if why.is_empty() {
                    format!("refused ({code})")
                } else {
                    why
                },
            )
        })?;
    Ok((StatusCode::CREATED, Json(json!(message))).into_response())
}

#[utoipa::path(post, path = "/api/v1/chat/{peer}/read", tag = "chat",
    params(("peer" = String, Path, description = "a user's extension or a group's number")),
    responses((status = 200, body = crate::api::openapi::ReadMark), (status = 401, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply)))]
/// `POST /chat/{peer}/read`: the conversation is read up to its last message.
pub(super) async fn read(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(peer): Path<String>,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    known_peer(&s, &v, &peer)?;
    Ok(Json(ask(&s, ChatQuery::Read { user: aor(&v), peer }).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = MuteChange)]
#[serde(deny_unknown_fields)]
pub(super) struct Mute {
    muted: bool,
}

#[utoipa::path(put, path = "/api/v1/chat/mute", tag = "chat", request_body = Mute,
    responses((status = 200, body = crate::api::openapi::Muted), (status = 401, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply)))]
/// `PUT /chat/mute` `{"muted": true|false}`: whether new messages are
/// pushed to the user's phones and stream (they are kept either way).
pub(super) async fn mute(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let Mute { muted } = json_body(&body)?;
    Ok(Json(
        ask(
            &s,
            ChatQuery::Mute {
                user: aor(&v),
                on: muted,
            },
        )
        .await?,
    ))
}
