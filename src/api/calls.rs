//! `/api/v1/calls`: live calls the token's user may see, and click-to-call
//! (the user's own phone rings first; when they answer, the target is
//! called as if they had dialled it).

use super::{json_body, ApiState, Peer, Problem};
use crate::control::Command;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// A number to call: digits, `+`, `*` and `#`; 422 otherwise.
fn number(raw: &str) -> Result<String, Problem> {
    let to = raw.trim();
    let valid = !to.is_empty() && to.len() <= 64 && to.chars().all(|c| c.is_ascii_digit() || "+*#".contains(c));
    if !valid {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("to: {to:?} is not a number (digits, + * #)"),
        ));
    }
    Ok(to.to_string())
}

#[utoipa::path(get, path = "/api/v1/calls", tag = "calls",
    responses((status = 200, body = Vec<crate::call::CallView>), (status = 401, response = crate::api::openapi::ProblemReply)))]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ClickToCall {
    /// The number to call: an extension, group, queue or external number.
    to: String,
    /// Whose phone rings first: the token's user unless given (then one
    /// they may act for: a supervisor's agent, anyone for admins).
    #[serde(default)]
    from: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/calls", tag = "calls", request_body = ClickToCall,
    responses((status = 202, body = crate::api::openapi::Started), (status = 400, response = crate::api::openapi::ProblemReply), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply), (status = 409, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply)))]
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
    let to = number(&req.to)?;
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

/// The live call `raw` names, if the viewer sees it.
async fn visible_call(s: &ApiState, v: &super::Viewer, raw: &str) -> Result<crate::call::CallView, Problem> {
    let missing = || Problem::not_found(&format!("no call {raw}"));
    let conversation: u64 = raw.parse().map_err(|_| missing())?;
    let all = s.ask(Command::Calls).await?;
    all.into_iter()
        .find(|c| c.conversation == conversation && v.sees_call(&c.account, &c.caller, &c.callee))
        .ok_or_else(missing)
}

/// Who acts on call `raw` (`party`, or the viewer), if the viewer may act
/// for them on a call it sees: the conversation and the party.
async fn acting_party(
    s: &ApiState,
    v: &super::Viewer,
    party: Option<String>,
    raw: &str,
) -> Result<(u64, String), Problem> {
    let party = party.unwrap_or_else(|| v.ext.clone());
    if !v.sees_user(&v.domain, &party) {
        return Err(Problem::forbidden(&format!("not your agent: {party}")));
    }
    Ok((visible_call(s, v, raw).await?.conversation, party))
}

#[utoipa::path(delete, path = "/api/v1/calls/{conversation}", tag = "calls",
    params(("conversation" = u64, Path, description = "the call's conversation number")),
    responses((status = 204, description = "hung up"), (status = 401, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply)))]
/// `DELETE /calls/{conversation}`: hangs the whole call up (204).
pub(super) async fn end(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<StatusCode, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let call = visible_call(&s, &v, &raw).await?;
    let conversation = call.conversation;
    if !s.ask(|reply| Command::EndCall { conversation, reply }).await? {
        return Err(Problem::not_found(&format!("no call {raw}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Transfer {
    /// Blind: the number to send the partner to.
    #[serde(default)]
    to: Option<String>,
    /// Attended: the party's other (consult) call, whose partner the
    /// partner is joined with.
    #[serde(default)]
    to_call: Option<u64>,
    /// Who transfers: the token's user unless given (one they may act for).
    #[serde(default)]
    party: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/calls/{conversation}/transfer", tag = "calls",
    params(("conversation" = u64, Path, description = "the call's conversation number")),
    request_body = Transfer,
    responses((status = 202, description = "the partner is on its way to the target"), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply), (status = 409, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply)))]
/// `POST /calls/{conversation}/transfer`: `{"to": …}` sends the party's
/// partner to `to`, blind, by the same rules as a REFER (a failed
/// transfer does not come back); `{"to_call": n}` joins it with the
/// party's partner on call `n` (attended; not when either call is one the
/// party made to a queue). The party is released. 202.
pub(super) async fn transfer(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let req: Transfer = json_body(&body)?;
    let target = match (&req.to, req.to_call) {
        (Some(to), None) => Ok(number(to)?),
        (None, Some(consult)) => Err(consult),
        _ => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "give either to (blind) or to_call (attended)",
            ))
        }
    };
    let (conversation, party) = acting_party(&s, &v, req.party, &raw).await?;
    if let Err(consult) = target {
        let consult = visible_call(&s, &v, &consult.to_string()).await?.conversation;
        s.ask(|reply| Command::TransferAttended {
            conversation,
            consult,
            party,
            reply,
        })
        .await?
        .map_err(|e| Problem::new(StatusCode::CONFLICT, e))?;
        return Ok(StatusCode::ACCEPTED);
    }
    let target = target.expect("blind");
    s.ask(|reply| Command::TransferCall {
        conversation,
        party,
        target,
        reply,
    })
    .await?
    .map_err(|e| Problem::new(StatusCode::CONFLICT, e))?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Hold {
    /// true: hold; false: resume.
    on: bool,
    /// Who holds: the token's user unless given (one they may act for).
    #[serde(default)]
    party: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/calls/{conversation}/hold", tag = "calls",
    params(("conversation" = u64, Path, description = "the call's conversation number")),
    request_body = Hold,
    responses((status = 204, description = "held or resumed"), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply), (status = 409, response = crate::api::openapi::ProblemReply)))]
/// `PUT /calls/{conversation}/hold` `{"on": bool}`: the party's partner
/// hears the hold music (the party, silence) until `{"on": false}`; the
/// party's phone is not told.
pub(super) async fn hold(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let Hold { on, party } = json_body(&body)?;
    let (conversation, party) = acting_party(&s, &v, party, &raw).await?;
    s.ask(|reply| Command::HoldCall {
        conversation,
        party,
        on,
        reply,
    })
    .await?
    .map_err(|e| Problem::new(StatusCode::CONFLICT, e))?;
    Ok(StatusCode::NO_CONTENT)
}
