//! The chat through the API: a message sent with the API reaches a SIP
//! phone like a MESSAGE and the recipient's event stream (not a muted
//! user's); a MESSAGE from a phone is read with the API; unread counts and
//! read marks; bad input.

use crate::api::{next_event, Api};
use crate::chat::{got, receiver, send};
use reqwest::Method;
use std::io::BufRead;

#[test]
fn chat_through_the_api_reaches_phones_and_streams_and_reads_what_phones_sent() {
    let api = Api::start();
    let (agent, admin) = (api.token("1004"), api.token("1002"));
    let phone = receiver(&api.d, "1002", 1);
    let stream = api.events(&admin, "");
    let mut events = std::io::BufReader::new(stream).lines();
    let (status, _, sent) = api.send(
        Method::POST,
        "/api/v1/chat/1002",
        &agent,
        r#"{"text": "hola desde el CRM"}"#,
    );
    assert_eq!((status, sent["from"].as_str()), (201, Some("1004")), "{sent}");
    assert_eq!(got(&phone.wait()), ["1004: hola"], "the phone got it as a MESSAGE");
    let e = next_event(&mut events, "chat_message", "never");
    assert_eq!(
        (e["from"].as_str(), e["preview"].as_str(), e["id"].as_u64()),
        (Some("1004"), Some("hola desde el CRM"), sent["id"].as_u64())
    );
    // Unread until read.
    let unread = |token: &str| api.get("/api/v1/chat", token).1["conversations"].clone();
    assert_eq!(unread(&admin)[0]["conversation"], "1004");
    assert_eq!(unread(&admin)[0]["unread"], 1);
    let (status, _, mark) = api.send(Method::POST, "/api/v1/chat/1004/read", &admin, "");
    assert_eq!((status, mark["read_up_to"].as_u64()), (200, sent["id"].as_u64()));
    assert_eq!(unread(&admin)[0]["unread"], 0);
    // A MESSAGE from a phone is in the API's history.
    assert!(send(&api.d, "1001", "1004", "from-a-phone").starts_with("status 202"));
    let history = api.get("/api/v1/chat/1001", &agent).1;
    assert_eq!(
        history["messages"][0]["body"].as_str().map(str::trim_end),
        Some("from-a-phone"),
        "{history}"
    );
    // Group messages follow SIP's rules; the agent is a member of 2001.
    assert_eq!(
        api.send(Method::POST, "/api/v1/chat/2001", &agent, r#"{"text": "team"}"#)
            .0,
        201
    );
    // A muted user's stream does not show messages (kept all the same).
    let (status, _, m) = api.send(Method::PUT, "/api/v1/chat/mute", &admin, r#"{"muted": true}"#);
    assert_eq!((status, m["muted"].as_bool()), (200, Some(true)));
    assert_eq!(api.get("/api/v1/chat", &admin).1["muted"], true);
    api.send(Method::POST, "/api/v1/chat/1002", &agent, r#"{"text": "while muted"}"#);
    api.send(Method::PUT, "/api/v1/chat/mute", &admin, r#"{"muted": false}"#);
    api.send(
        Method::POST,
        "/api/v1/chat/1002",
        &agent,
        r#"{"text": "unmuted again"}"#,
    );
    next_event(&mut events, "unmuted again", "while muted");
    assert_eq!(
        api.get("/api/v1/chat/1004", &admin).1["messages"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "kept while muted"
    );
    // Bad input.
    for (path, body, want) in [
        ("/api/v1/chat/9999", r#"{"text": "x"}"#, 404),
        ("/api/v1/chat/1002", r#"{"text": "  "}"#, 422),
        ("/api/v1/chat/1002", r#"{"text": "x", "urgent": true}"#, 400),
        ("/api/v1/chat/mute", r#"{"muted": "yes"}"#, 422),
    ] {
        let method = if path.ends_with("mute") {
            Method::PUT
        } else {
            Method::POST
        };
        assert_eq!(api.send(method, path, &agent, body).0, want, "{path} {body}");
    }
}
