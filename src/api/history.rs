//! `/api/v1/history`: call records the token's user may see, newest
//! first in pages, filtered by user and kind, date, number and queue; and
//! the tags and notes agents add to a record after the call.

use super::{json_body, query, ApiState, Peer, Problem, Viewer};
use crate::cdr::history::{AnnotateError, Filter, Kind};
use crate::cdr::CallRecord;
use crate::control::{Command, RecordCheck};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Whose calls (an extension the viewer may see); with `kind`, the
    /// viewer's own when absent.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    kind: Option<Kind>,
    /// Started at or after / before: Unix ms, or `YYYY-MM-DD[THH:MM[:SS]][Z]` UTC.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default)]
    before: Option<String>,
}

/// Whether the viewer may see a record: it sees one of its parties.
fn check(v: &Viewer) -> RecordCheck {
    let v = v.clone();
    Box::new(move |r: &CallRecord| r.parties().any(|p| v.sees_user(&r.account, p)))
}

#[utoipa::path(get, path = "/api/v1/history", tag = "history", params(HistoryQuery),
    responses((status = 200, body = crate::api::openapi::HistoryPage), (status = 400, response = crate::api::openapi::ProblemReply), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply)))]
/// `GET /history?…`: `{"records": [...], "next": id}`; `next` is the
/// `before` of the next page, null on the last.
pub(super) async fn list(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let q = query(q)?;
    let time = |t: &Option<String>, name: &str| {
        t.as_deref()
            .map(|t| {
                unix_ms(t).ok_or_else(|| {
                    Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("{name}: {t:?} is neither Unix ms nor YYYY-MM-DD[THH:MM[:SS]][Z]"),
                    )
                })
            })
            .transpose()
    };
    let user = match (q.user, q.kind) {
        (Some(u), _) => Some(u),
        (None, Some(_)) => Some(v.ext.clone()),
        (None, None) => None,
    };
    if let Some(u) = &user {
        if !v.sees_user(&v.domain, u) {
            return Err(Problem::forbidden(&format!("not your calls: {u}")));
        }
    }
    let filter = Filter {
        user,
        kind: q.kind,
        from_ms: time(&q.from, "from")?,
        to_ms: time(&q.to, "to")?,
        number: q.number,
        queue: q.queue,
    };
    let (limit, before, visible) = (q.limit.unwrap_or(50).clamp(1, 500), q.before, check(&v));
    let (records, next) = s
        .ask(|reply| Command::History {
            filter,
            visible,
            before,
            limit,
            reply,
        })
        .await?
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(json!({ "records": records, "next": next })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = AnnotationChange)]
#[serde(deny_unknown_fields)]
pub(super) struct Annotation {
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    notes: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/history/{id}", tag = "history",
    params(("id" = String, Path, description = "the record's id")),
    request_body = Annotation,
    responses((status = 200, body = crate::cdr::history::Entry), (status = 400, response = crate::api::openapi::ProblemReply), (status = 401, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply)))]
/// `PATCH /history/{id}` `{"tags": [...], "notes": "..."}` (either): the
/// record as it now reads.
pub(super) async fn annotate(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let change: Annotation = json_body(&body)?;
    let (visible, by) = (check(&v), v.ext.clone());
    let entry = s
        .ask(|reply| Command::Annotate {
            id,
            visible,
            tags: change.tags,
            notes: change.notes,
            by,
            reply,
        })
        .await?
        .map_err(|e| {
            let status = match e {
                AnnotateError::NotFound => StatusCode::NOT_FOUND,
                AnnotateError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                AnnotateError::Store => StatusCode::SERVICE_UNAVAILABLE,
            };
            Problem::new(status, e.to_string())
        })?;
    Ok(Json(json!(entry)))
}

/// Unix ms from `t`: a number of ms, or a UTC date `YYYY-MM-DD` with an
/// optional time `THH:MM[:SS]` and `Z`.
fn unix_ms(t: &str) -> Option<u64> {
    if let Ok(ms) = t.parse::<u64>() {
        return Some(ms);
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = t.split_once('T').unwrap_or((t, "00:00"));
    let d: Vec<i64> = date.split('-').map(str::parse).collect::<Result<_, _>>().ok()?;
    let hms: Vec<i64> = time.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
    let ([y, m, day], [h, min, sec @ ..]) = (d.as_slice(), hms.as_slice()) else {
        return None;
    };
    let sec = match sec {
        [] => 0,
        [s] => *s,
        _ => return None,
    };
    let valid = (1..=12).contains(m)
        && (1..=31).contains(day)
        && (0..24).contains(h)
        && (0..60).contains(min)
        && (0..61).contains(&sec);
    if !valid || *y < 1970 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant.
    let (yy, mm) = if *m <= 2 { (y - 1, m + 9) } else { (*y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + min) * 60 + sec)
        .ok()
        .map(|s| s * 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_read_as_utc() {
        use super::unix_ms;
        assert_eq!(unix_ms("1796515200000"), Some(1_796_515_200_000));
        assert_eq!(unix_ms("1970-01-01"), Some(0));
        assert_eq!(unix_ms("2026-12-05"), Some(1_796_428_800_000));
        assert_eq!(unix_ms("2026-12-05T10:30Z"), Some(1_796_428_800_000 + 37_800_000));
        assert_eq!(unix_ms("2024-02-29T00:00:01"), Some(1_709_164_801_000));
        for bad in ["yesterday", "2026-13-01", "2026-12-05T25:00", "2026-12"] {
            assert_eq!(unix_ms(bad), None, "{bad}");
        }
    }
}
