//! The API's OpenAPI 3.1 document (`GET /api/v1/openapi.json`), generated
//! by utoipa from the handlers' `#[utoipa::path]` annotations and the
//! types' `ToSchema` derives; a unit test holds it to the router's table.

use crate::cdr::history::Entry;
use crate::chat::queries::Unread;
use crate::chat::ChatMessage;
use crate::contacts::Contact;
use serde::Serialize;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Who a token belongs to.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub extension: String,
    pub domain: String,
    /// owner, admin, supervisor or agent.
    pub role: String,
}

/// A page of contact cards; `next` is the `after` of the next page.
#[derive(Serialize, ToSchema)]
pub struct ContactPage {
    pub contacts: Vec<Arc<Contact>>,
    pub next: Option<u64>,
}

/// A page of history, newest first; `next` is the `before` of the next page.
#[derive(Serialize, ToSchema)]
pub struct HistoryPage {
    pub records: Vec<Entry>,
    pub next: Option<String>,
}

/// The user's chat conversations.
#[derive(Serialize, ToSchema)]
pub struct Conversations {
    pub conversations: Vec<Unread>,
    pub muted: bool,
}

/// Messages of one conversation, oldest first.
#[derive(Serialize, ToSchema)]
pub struct ChatHistory {
    pub messages: Vec<ChatMessage>,
}

#[derive(Serialize, ToSchema)]
pub struct ReadMark {
    pub read_up_to: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Muted {
    pub muted: bool,
}

/// A click-to-call under way.
#[derive(Serialize, ToSchema)]
pub struct Started {
    pub conversation: u64,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct ProblemDocument {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

/// An error answer: a problem document whose `detail` says why.
#[derive(utoipa::ToResponse)]
#[response(
    description = "an RFC 9457 problem document; its detail says why",
    content_type = "application/problem+json"
)]
#[allow(dead_code)] // a description for the document, never built
pub struct ProblemReply(#[to_schema] ProblemDocument);

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard API",
        version = "1",
        description = "Directory, agent states, calls, history, contact cards, chat and events of a switchboard PBX. Every request under /api/v1 carries a user's token (`switchboard ctl token create EXT`); what it sees follows the user's role."
    ),
    paths(
        super::me,
        super::directory,
        super::agents,
        super::set_agent_state,
        super::queues,
        super::events,
        super::metrics,
        super::openapi_json,
        super::calls::list,
        super::calls::click_to_call,
        super::calls::end,
        super::calls::transfer,
        super::calls::hold,
        super::history::list,
        super::history::annotate,
        super::contacts::search,
        super::contacts::create,
        super::contacts::lookup,
        super::contacts::read,
        super::contacts::update,
        super::contacts::delete,
        super::chat::conversations,
        super::chat::mute,
        super::chat::history,
        super::chat::send,
        super::chat::read,
        super::phonebook::phonebook,
    ),
    components(
        schemas(ProblemDocument, crate::events::Sequenced, crate::cdr::history::Kind),
        responses(ProblemReply)
    ),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The document, rendered once.
pub fn json() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().expect("the OpenAPI document serializes"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// `/a/:id` as OpenAPI writes it: `/a/{id}`.
    fn braces(path: &str) -> String {
        path.split('/')
            .map(|seg| match seg.strip_prefix(':') {
                Some(name) => format!("{{{name}}}"),
                None => seg.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_string()),
                        _ => refs(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_has_every_route_of_the_router_and_no_other_and_its_references_resolve() {
        let doc: serde_json::Value = serde_json::from_str(super::json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path}"
                );
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let routed: BTreeSet<(String, String)> = super::super::routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), braces(p)))
            .collect();
        assert_eq!(routed, documented);
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let target = r
                .strip_prefix("#/")
                .unwrap_or_else(|| panic!("{r}"))
                .split('/')
                .fold(&doc, |at, part| &at[part]);
            assert!(target.is_object(), "{r} does not resolve");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
