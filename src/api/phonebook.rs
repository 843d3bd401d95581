//! `/phonebook.xml`: the account's directory as the remote phonebooks of
//! desk phones read it (Yealink `YealinkIPPhoneDirectory`, the default, or
//! Cisco `CiscoIPPhoneDirectory` with `?format=cisco`), for a phone that
//! proves it holds an account's SIP credentials with HTTP digest (RFC
//! 7616). `?domain=` names another account than the default.

use super::{query, ApiState, Peer, Problem};
use crate::control::{Command, DirectoryEntry, PhonebookReply};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct PhonebookQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    domain: Option<String>,
}

/// `&`, `<`, `>`, `"` and `'` as entities.
fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The phonebook document in `format` ("yealink" or "cisco").
fn document(format: &str, entries: &[DirectoryEntry]) -> String {
    let root = if format == "cisco" {
        "CiscoIPPhoneDirectory"
    } else {
        "YealinkIPPhoneDirectory"
    };
    let mut out = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}>\n");
    if format == "cisco" {
        out.push_str("<Title>Directory</Title>\n<Prompt>Select an entry</Prompt>\n");
    }
    for e in entries {
        let name = if e.name.is_empty() { &e.number } else { &e.name };
        out.push_str(&format!(
            "<DirectoryEntry>\n<Name>{}</Name>\n<Telephone>{}</Telephone>\n</DirectoryEntry>\n",
            xml_text(name),
            xml_text(&e.number)
        ));
    }
    out.push_str(&format!("</{root}>\n"));
    out
}

#[utoipa::path(get, path = "/phonebook.xml", tag = "operations", security(()), params(PhonebookQuery),
    responses((status = 200, description = "Yealink or Cisco XML directory", content_type = "text/xml", body = String), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply)))]
pub(super) async fn phonebook(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    uri: Uri,
    headers: HeaderMap,
    q: Result<Query<PhonebookQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let format = q.format.unwrap_or_else(|| "yealink".into());
    if format != "yealink" && format != "cisco" {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("format: {format:?}: expected yealink or cisco"),
        ));
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let target = uri
        .path_and_query()
        .map_or("/phonebook.xml", |p| p.as_str())
        .to_string();
    let reply = s
        .ask(|reply| Command::Phonebook {
            domain: q.domain,
            authorization,
            target,
            source: from.ip(),
            reply,
        })
        .await?;
    match reply {
        PhonebookReply::Entries(entries) => Ok((
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            document(&format, &entries),
        )
            .into_response()),
        PhonebookReply::Challenge(challenges) => {
            let mut r =
                Problem::new(StatusCode::UNAUTHORIZED, "SIP credentials required (HTTP digest)").into_response();
            let h = r.headers_mut();
            h.remove(header::WWW_AUTHENTICATE);
            for c in challenges {
                if let Ok(v) = header::HeaderValue::from_str(&c) {
                    h.append(header::WWW_AUTHENTICATE, v);
                }
            }
            Ok(r)
        }
        PhonebookReply::Rejected => Err(Problem::forbidden("wrong credentials")),
        PhonebookReply::Throttled => Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications; try again later",
        )),
        PhonebookReply::NoAccount => Err(Problem::not_found("no such account")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_escaped_in_both_formats() {
        let e = DirectoryEntry {
            number: "1001".into(),
            name: "Ana & <Bea>".into(),
            kind: "user".into(),
            detail: String::new(),
            registered: None,
        };
        let y = document("yealink", std::slice::from_ref(&e));
        assert!(
            y.contains("<YealinkIPPhoneDirectory>") && y.contains("<Name>Ana &amp; &lt;Bea&gt;</Name>"),
            "{y}"
        );
        let c = document("cisco", &[e]);
        assert!(
            c.contains("<CiscoIPPhoneDirectory>") && c.contains("<Telephone>1001</Telephone>"),
            "{c}"
        );
    }
}
