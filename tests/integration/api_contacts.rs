//! Contact cards through the API: kept (across `kill -9`), checked, found
//! by number however it is written, and shown to a ringing phone (display
//! name and `X-Contact-Tags` in its INVITE, the card in the stream's
//! ringing event; baresip shows the name).

use crate::api::{next_event, Api};
use crate::calls::{callee, caller};
use reqwest::Method;
use std::io::BufRead;

#[test]
fn contact_cards_are_kept_checked_found_by_number_and_shown_to_a_ringing_phone() {
    let mut api = Api::start();
    let (agent, supervisor, owner) = (api.token("1004"), api.token("1003"), api.token("1001"));
    let card = r#"{"name": "Ana Garcia", "company": "Acme", "phones": ["1001", "+34 600 123 456"],
                   "email": "ana@acme.test", "tags": ["vip", "spain"]}"#;
    let (status, _, ana) = api.send(Method::POST, "/api/v1/contacts", &agent, card);
    assert_eq!(status, 201, "{ana}");
    let id = ana["id"].as_u64().unwrap();
    assert_eq!(
        (ana["created_by"].as_str(), ana["company"].as_str()),
        (Some("1004"), Some("Acme"))
    );
    // Bad input: the right status, a problem document, nothing stored.
    let big = format!(r#"{{"name": "x", "notes": "{}"}}"#, "n".repeat(20_000));
    for (body, want) in [
        (r#"{"name": "A", "colour": "red"}"#, 400),
        (r#"{"name": "A""#, 400),
        (r#"{"name": 5}"#, 422),
        (r#"{"company": "no name"}"#, 422),
        (r#"{"name": "A", "email": "not-an-address"}"#, 422),
        (r#"{"name": "A", "phones": ["call me"]}"#, 422),
        (big.as_str(), 413),
    ] {
        let (status, ctype, problem) = api.send(Method::POST, "/api/v1/contacts", &agent, body);
        assert_eq!(
            (status, ctype.as_str()),
            (want, "application/problem+json"),
            "{body:.60}: {problem}"
        );
    }
    let (_, list) = api.get("/api/v1/contacts", &owner);
    assert_eq!(list["contacts"].as_array().unwrap().len(), 1, "{list}");
    // Found by any way of writing its number.
    for number in ["0034600123456", "600%20123%20456", "1001"] {
        let (status, found) = api.get(&format!("/api/v1/contacts/lookup?number={number}"), &supervisor);
        assert_eq!((status, found["id"].as_u64()), (200, Some(id)), "{number}");
    }
    assert_eq!(api.get("/api/v1/contacts/lookup?number=%2B44600123456", &agent).0, 404);
    let (status, _, changed) = api.send(
        Method::PATCH,
        &format!("/api/v1/contacts/{id}"),
        &agent,
        r#"{"notes": "prefers mornings"}"#,
    );
    assert_eq!(
        (status, changed["notes"].as_str(), changed["name"].as_str()),
        (200, Some("prefers mornings"), Some("Ana Garcia"))
    );
    assert_eq!(
        api.get("/api/v1/contacts?q=acme", &agent).1["contacts"][0]["id"].as_u64(),
        Some(id)
    );
    assert!(api.get("/api/v1/contacts?tag=gold", &agent).1["contacts"]
        .as_array()
        .unwrap()
        .is_empty());

    // A call from 1001 (one of the card's numbers) to 1004: the phone is
    // shown the card's name and tags, the stream's ringing event the card.
    let stream = api.events(&supervisor, "");
    let mut lines = std::io::BufReader::new(stream).lines();
    let phone = callee(&api.d, "1004", "uas_answer.xml", &[]);
    assert_eq!(caller(&api.d, "1001", "1004", 200, "uac_call.xml").code, 0);
    let invite = phone.wait().messages;
    assert!(invite.contains("From: \"Ana Garcia\" <sip:1001@"), "{invite}");
    assert!(invite.contains("X-Contact-Tags: vip,spain"), "{invite}");
    let ringing = next_event(&mut lines, "\"contact\"", "1002@");
    assert_eq!(
        (ringing["party"].as_str(), ringing["caller"]["number"].as_str()),
        (Some("1004"), Some("1001"))
    );
    assert_eq!(ringing["caller"]["contact"]["id"].as_u64(), Some(id));
    assert_eq!(ringing["caller"]["contact"]["notes"], "prefers mornings");

    // Kept across kill -9.
    api.d.kill9();
    api.d.restart();
    assert_eq!(
        api.get(&format!("/api/v1/contacts/{id}"), &agent).1["notes"],
        "prefers mornings"
    );
    // Deleted by its creator, an admin or an owner only.
    let path = format!("/api/v1/contacts/{id}");
    assert_eq!(api.send(Method::DELETE, &path, &supervisor, "").0, 403);
    assert_eq!(api.send(Method::DELETE, &path, &owner, "").0, 204);
    assert_eq!(api.get(&path, &agent).0, 404);
    assert_eq!(api.get("/api/v1/contacts/lookup?number=1001", &agent).0, 404);
}

#[test]
fn a_baresip_agent_is_shown_the_contacts_name() {
    let api = Api::start();
    let agent = api.token("1004");
    let card = r#"{"name": "Ana Garcia", "phones": ["1001"], "tags": ["vip"]}"#;
    assert_eq!(api.send(Method::POST, "/api/v1/contacts", &agent, card).0, 201);
    let wav = tempfile::tempdir().unwrap();
    let source = crate::baresip_peer::silence_wav(wav.path(), 5);
    let (phone, ctrl) = crate::baresip_peer::start_baresip_with_keys(&api.d, "1004", &source, false);
    let stream = api.events(&agent, "");
    let mut lines = std::io::BufReader::new(stream).lines();
    let customer = crate::calls::caller_in_background(&api.d, "1001", "1004", 300);
    // The phone rings (it sent 180), showing who calls; it is answered.
    next_event(&mut lines, "\"phase\":\"early\"", "never");
    crate::baresip_peer::baresip_command(ctrl, "accept", "");
    assert_eq!(customer.wait().code, 0, "baresip answered");
    let printed = phone.printed();
    assert!(
        printed.contains("Incoming call from: Ana Garcia sip:1001@"),
        "{printed}"
    );
}
