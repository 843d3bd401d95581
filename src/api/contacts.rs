//! `/api/v1/contacts`: the account's contact cards. Every user of an
//! account reads, creates and edits its cards (agents enter them after
//! calls); a card is deleted by its creator, an admin or an owner.

use super::{json_body, query, ApiState, Peer, Problem};
use crate::contacts::{ContactError, ContactFields};
use crate::control::{Command, ContactRequest};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

impl From<ContactError> for Problem {
    fn from(e: ContactError) -> Problem {
        let status = match e {
            ContactError::NotFound(_) => StatusCode::NOT_FOUND,
            ContactError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ContactError::Forbidden => StatusCode::FORBIDDEN,
            ContactError::Store => StatusCode::SERVICE_UNAVAILABLE,
        };
        Problem::new(status, e.to_string())
    }
}

/// Asks the core about the cards of the viewer's account.
async fn ask(
    s: &ApiState,
    v: &super::Viewer,
    request: ContactRequest,
) -> Result<Vec<std::sync::Arc<crate::contacts::Contact>>, Problem> {
    let account = v.domain.clone();
    Ok(s.ask(|reply| Command::Contacts {
        account,
        request,
        reply,
    })
    .await??)
}

fn id(raw: &str) -> Result<u64, Problem> {
    raw.parse()
        .map_err(|_| Problem::not_found(&format!("no contact {raw}")))
}

fn one(mut cards: Vec<std::sync::Arc<crate::contacts::Contact>>, what: &str) -> Result<Json<Value>, Problem> {
    match cards.pop() {
        Some(c) => Ok(Json(json!(c))),
        None => Err(Problem::not_found(what)),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    tag: Option<String>,
    /// The last id of the previous page.
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts", params(SearchQuery),
    responses((status = 200, body = crate::api::openapi::ContactPage), (status = 401, response = crate::api::openapi::ProblemReply)))]
/// `GET /contacts?q=&tag=&after=&limit=`: `{"contacts": [...], "next": id}`
/// in id order; `next` is the `after` of the next page, absent on the last.
pub(super) async fn search(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    q: QueryOf<SearchQuery>,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let cards = ask(
        &s,
        &v,
        ContactRequest::Search {
            text: q.q,
            tag: q.tag,
            after: q.after,
            limit: limit + 1,
        },
    )
    .await?;
    let next = (cards.len() > limit).then(|| cards[limit - 1].id);
    let page = &cards[..cards.len().min(limit)];
    Ok(Json(json!({ "contacts": page, "next": next })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct LookupQuery {
    number: String,
}

#[utoipa::path(get, path = "/api/v1/contacts/lookup", tag = "contacts", params(LookupQuery),
    responses((status = 200, body = crate::contacts::Contact), (status = 401, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply)))]
/// `GET /contacts/lookup?number=`: the card with that number, however it is
/// written.
pub(super) async fn lookup(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    q: QueryOf<LookupQuery>,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let number = query(q)?.number;
    let what = format!("no contact has the number {number}");
    one(ask(&s, &v, ContactRequest::Lookup(number)).await?, &what)
}

#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "contacts",
    params(("id" = u64, Path)),
    responses((status = 200, body = crate::contacts::Contact), (status = 401, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply)))]
pub(super) async fn read(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let id = id(&raw)?;
    one(ask(&s, &v, ContactRequest::Get(id)).await?, "")
}

#[utoipa::path(post, path = "/api/v1/contacts", tag = "contacts", request_body = ContactFields,
    responses((status = 201, body = crate::contacts::Contact), (status = 400, response = crate::api::openapi::ProblemReply), (status = 401, response = crate::api::openapi::ProblemReply), (status = 413, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply)))]
/// `POST /contacts` with the fields (`name` required): 201 and the card.
pub(super) async fn create(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let fields: ContactFields = json_body(&body)?;
    let cards = ask(
        &s,
        &v,
        ContactRequest::Create {
            by: v.ext.clone(),
            fields,
        },
    )
    .await?;
    let card = one(cards, "")?;
    Ok((StatusCode::CREATED, card).into_response())
}

#[utoipa::path(patch, path = "/api/v1/contacts/{id}", tag = "contacts",
    params(("id" = u64, Path)), request_body = ContactFields,
    responses((status = 200, body = crate::contacts::Contact), (status = 400, response = crate::api::openapi::ProblemReply), (status = 401, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply)))]
/// `PATCH /contacts/{id}` with the fields to change.
pub(super) async fn update(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let id = id(&raw)?;
    let fields: ContactFields = json_body(&body)?;
    one(ask(&s, &v, ContactRequest::Update { id, fields }).await?, "")
}

#[utoipa::path(delete, path = "/api/v1/contacts/{id}", tag = "contacts",
    params(("id" = u64, Path)),
    responses((status = 204, description = "deleted"), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply)))]
/// `DELETE /contacts/{id}`: 204.
pub(super) async fn delete(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<StatusCode, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let id = id(&raw)?;
    ask(
        &s,
        &v,
        ContactRequest::Delete {
            id,
            by: v.ext.clone(),
            admin: v.is_admin(),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
