//! Call history through the API: what each call was for a user (missed,
//! incoming, outgoing), newest first in pages, and the tags and notes an
//! agent adds after the call (kept across `kill -9`, checked, only on
//! calls the token's user may see).

use crate::api::Api;
use crate::calls::{callee, caller};
use reqwest::Method;
use serde_json::Value;

fn ids(page: &Value) -> Vec<String> {
    page["records"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn history_pages_newest_first_by_kind_and_keeps_an_agents_tags_and_notes() {
    let mut api = Api::start();
    // 1001 calls 1004 before its phone is registered (missed), then once
    // it is (answered); 1004 calls 1002; 1001 calls 1002 (not 1004's).
    assert_ne!(caller(&api.d, "1001", "1004", 0, "uac_fail.xml").code, 255);
    let phone = callee(&api.d, "1004", "uas_answer.xml", &["-m", "1"]);
    assert_eq!(caller(&api.d, "1001", "1004", 100, "uac_call.xml").code, 0);
    phone.wait();
    let other = callee(&api.d, "1002", "uas_answer.xml", &["-m", "2"]);
    assert_eq!(caller(&api.d, "1004", "1002", 100, "uac_call.xml").code, 0);
    assert_eq!(caller(&api.d, "1001", "1002", 100, "uac_call.xml").code, 0);
    other.wait();
    let (agent, supervisor, owner) = (api.token("1004"), api.token("1003"), api.token("1001"));

    let all = api.get("/api/v1/history", &agent).1;
    assert_eq!(ids(&all).len(), 3, "the agent's three calls: {all}");
    let starts: Vec<u64> = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["end_ms"].as_u64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first: {starts:?}");
    let kind = |k: &str| api.get(&format!("/api/v1/history?kind={k}"), &agent).1;
    let missed = kind("missed");
    assert_eq!(ids(&missed).len(), 1, "{missed}");
    assert_eq!(missed["records"][0]["answer_ms"], Value::Null);
    assert_eq!(ids(&kind("incoming")).len(), 2);
    assert_eq!(kind("outgoing")["records"][0]["callee"], "1002");
    assert_eq!(ids(&kind("transferred")).len(), 0);
    assert_eq!(api.get("/api/v1/history?kind=lost", &agent).0, 400);
    assert_eq!(api.get("/api/v1/history?from=yesterday", &agent).0, 422);
    assert_eq!(ids(&api.get("/api/v1/history?from=2999-01-01", &agent).1).len(), 0);
    // A supervisor reads their agent's calls, not the owner's.
    assert_eq!(
        ids(&api.get("/api/v1/history?user=1004&kind=missed", &supervisor).1),
        ids(&missed)
    );
    assert_eq!(api.get("/api/v1/history?user=1001", &supervisor).0, 403);

    // Pages of one follow each other to the end.
    let (mut seen, mut before) = (Vec::new(), String::new());
    loop {
        let page = api.get(&format!("/api/v1/history?limit=1{before}"), &owner).1;
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "the owner sees every call of the account once: {seen:?}");
    seen.dedup();
    assert_eq!(seen.len(), 4);

    // Tags and notes after the call.
    let answered = &ids(&kind("incoming"))
        .into_iter()
        .find(|id| !ids(&missed).contains(id))
        .unwrap();
    let path = format!("/api/v1/history/{answered}");
    let (status, _, entry) = api.send(
        Method::PATCH,
        &path,
        &agent,
        r#"{"tags": ["sale", "callback"], "notes": "wants a quote"}"#,
    );
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["annotation"]["updated_by"], "1004");
    let (status, _, entry) = api.send(Method::PATCH, &path, &agent, r#"{"notes": "quote sent"}"#);
    assert_eq!(
        (status, entry["annotation"]["tags"][1].as_str()),
        (200, Some("callback"))
    );
    for (body, want) in [
        (r#"{"tags": [""]}"#, 422),
        (r#"{"mood": "happy"}"#, 400),
        (r#"{"notes": 3}"#, 422),
    ] {
        assert_eq!(api.send(Method::PATCH, &path, &agent, body).0, want, "{body}");
    }
    let owners_call = ids(&api.get("/api/v1/history?user=1001&number=1002", &owner).1);
    let foreign = format!("/api/v1/history/{}", owners_call[0]);
    assert_eq!(api.send(Method::PATCH, &foreign, &agent, r#"{"notes": "x"}"#).0, 404);
    assert_eq!(
        api.send(Method::PATCH, "/api/v1/history/nope", &agent, r#"{"notes": "x"}"#)
            .0,
        404
    );
    api.d.kill9();
    api.d.restart();
    let again = api.get("/api/v1/history?kind=incoming", &agent).1;
    let kept = again["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == answered.as_str())
        .unwrap();
    assert_eq!(
        (
            kept["annotation"]["notes"].as_str(),
            kept["annotation"]["tags"][0].as_str()
        ),
        (Some("quote sent"), Some("sale"))
    );
}
