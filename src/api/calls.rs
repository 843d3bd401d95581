//! `/api/v1/calls`: live calls the token's user may see, and click-to-call
//! (the user's own phone rings first; when they answer, the target is
//! called as if they had dialled it).

use super::{json_body, ApiState, Peer, Problem};
use crate::control::Command;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) async fn list(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let all = s.ask(Command::Calls).await?;
    Ok(Json(json!(all
        .into_iter()
        .filter(|c| v.sees_call(&c.account, &c.caller, &c.callee))
        .collect::<Vec<_>>())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClickToCall {
    /// The number to call: an extension, group, queue or external number.
    to: String,
    /// Whose phone rings first: the token's user unless given (then one
    /// they may act for: a supervisor's agent, anyone for admins).
    #[serde(default)]
    from: Option<String>,
}

/// `POST /calls` `{"to": …, "from": …}`: 202 with the conversation's
/// number; the call shows in `GET /calls` and in the event stream.
pub(super) async fn click_to_call(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let req: ClickToCall = json_body(&body)?;
    let to = req.to.trim().to_string();
    let valid = !to.is_empty() && to.len() <= 64 && to.chars().all(|c| c.is_ascii_digit() || "+*#".contains(c));
    if !valid {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("to: {to:?} is not a number (digits, + * #)"),
        ));
    }
    let ext = req.from.unwrap_or_else(|| v.ext.clone());
    let known = s
        .config
        .load()
        .account(&v.domain)
        .is_some_and(|a| a.user(&ext).is_some());
    if !known {
        return Err(Problem::not_found(&format!("no user {ext}")));
    }
    if !v.sees_user(&v.domain, &ext) {
        return Err(Problem::forbidden(&format!("not your agent: {ext}")));
    }
    let user = format!("{ext}@{}", v.domain);
    let conversation = s
        .ask(|reply| Command::ClickToCall {
            user,
            target: to,
            reply,
        })
        .await?
        .map_err(|(code, why)| {
            let status = if code == 404 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
            Problem::new(status, why)
        })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "conversation": conversation }))).into_response())
}
