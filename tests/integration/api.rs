//! The HTTP API with a real HTTP client (reqwest) against the running
//! daemon: tokens and roles, problem details for bad input with nothing
//! changed, the event stream with replay, history by role, metrics.

use crate::calls::{callee, caller};
use crate::harness::{default_dialplan, free_port, sipp_register, Daemon};
use reqwest::blocking::Client;
use serde_json::Value;
use std::io::BufRead;
use std::time::Duration;

pub struct Api {
    pub d: Daemon,
    pub base: String,
    pub http: Client,
}

impl Api {
    pub fn start() -> Api {
        let port = free_port();
        let d = Daemon::start_with(
            "",
            &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
            &default_dialplan(),
        );
        Api {
            d,
            base: format!("http://127.0.0.1:{port}"),
            http: Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        }
    }

    /// A token for `user`, from `ctl token create`.
    pub fn token(&self, user: &str) -> String {
        let out = self.d.ctl(&["token", "create", user, "tests"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    pub fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn put(&self, path: &str, token: &str, body: &str) -> (u16, String, Value) {
        self.send(reqwest::Method::PUT, path, token, body)
    }

    /// The event stream as `token` sees it (from `query`, e.g. `?since=3`).
    pub fn events(&self, token: &str, query: &str) -> reqwest::blocking::Response {
        let r = self
            .http
            .get(format!("{}/api/v1/events{query}", self.base))
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r
    }

    /// `GET /metrics` (no token).
    pub fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// `method` on `path` with a JSON `body`: status, content type, the
    /// JSON answer (null if none).
    pub fn send(&self, method: reqwest::Method, path: &str, token: &str, body: &str) -> (u16, String, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ctype, r.json().unwrap_or(Value::Null))
    }
}

fn aors(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["aor"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn tokens_roles_and_bad_input_answered_with_problem_details() {
    let api = Api::start();
    for user in ["1002", "1004"] {
        assert_eq!(
            sipp_register(&api.d, user, &format!("demo{user}"), 600, free_port(), &[]).code,
            0
        );
    }
    let (agent, supervisor, owner) = (api.token("1004"), api.token("1003"), api.token("1001"));
    // No token, a wrong one.
    let r = api.http.get(format!("{}/api/v1/me", api.base)).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().unwrap();
    assert_eq!(body["status"], 401);
    assert_eq!(api.get("/api/v1/me", "sbt_nope").0, 401);
    assert_eq!(api.get("/api/v1/me", &agent).1["role"], "agent");
    // Agents see themselves; 1003 supervises group 2001 (1002, 1004); the owner sees all.
    assert_eq!(aors(&api.get("/api/v1/agents", &agent).1), ["1004@pbx.test"]);
    assert_eq!(
        aors(&api.get("/api/v1/agents", &supervisor).1),
        ["1002@pbx.test", "1004@pbx.test"]
    );
    assert_eq!(
        aors(&api.get("/api/v1/agents", &owner).1),
        ["1002@pbx.test", "1004@pbx.test"]
    );
    // State changes: one's own, not another agent's; bad input changes nothing.
    let (s, _, v) = api.put(
        "/api/v1/agents/1004/state",
        &agent,
        r#"{"state":"not_ready","reason":"lunch"}"#,
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("not_ready")));
    assert_eq!(
        api.put("/api/v1/agents/1002/state", &agent, r#"{"state":"not_ready"}"#)
            .0,
        403
    );
    assert_eq!(
        api.put("/api/v1/agents/1009/state", &owner, r#"{"state":"ready"}"#).0,
        404
    );
    for (body, status) in [
        (r#"{"state":"ready""#, 400),
        (r#"{"state":"ready","mood":"happy"}"#, 400),
        (r#"{"state":7}"#, 422),
        (r#"{"state":"asleep"}"#, 422),
    ] {
        let (s, ctype, v) = api.put("/api/v1/agents/1004/state", &agent, body);
        assert_eq!(
            (s, ctype.as_str(), v["status"].as_u64()),
            (status, "application/problem+json", Some(status as u64)),
            "{body}: {v}"
        );
    }
    let big = format!(r#"{{"state":"ready","reason":"{}"}}"#, "x".repeat(20_000));
    assert_eq!(api.put("/api/v1/agents/1004/state", &agent, &big).0, 413);
    let agents = api.get("/api/v1/agents", &agent).1;
    assert_eq!(
        (agents[0]["state"].as_str(), agents[0]["reason"].as_str()),
        (Some("not_ready"), Some("lunch"))
    );
    // The supervisor may set a member's state; queues are not for agents.
    assert_eq!(
        api.put("/api/v1/agents/1002/state", &supervisor, r#"{"state":"not_ready"}"#)
            .0,
        200
    );
    assert_eq!(api.get("/api/v1/queues", &agent).0, 403);
    assert_eq!(api.get("/api/v1/queues", &supervisor).0, 200);
    // A revoked token is refused.
    let list: Value = serde_json::from_slice(&api.d.ctl(&["token", "list"]).stdout).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "1004@pbx.test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(api.d.ctl(&["token", "revoke", &id]).status.success());
    assert_eq!(api.get("/api/v1/me", &agent).0, 401);
    // Failed authentications from one address are rate-limited.
    let statuses: Vec<u16> = (0..12).map(|_| api.get("/api/v1/me", "sbt_guess").0).collect();
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

/// Reads server-sent events until one whose data contains `needle`; none
/// before it may contain `absent`.
pub fn next_event(lines: &mut impl Iterator<Item = std::io::Result<String>>, needle: &str, absent: &str) -> Value {
    for line in lines {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data:") {
            assert!(!data.contains(absent), "streamed: {data}");
            if data.contains(needle) {
                return serde_json::from_str(data.trim()).unwrap();
            }
        }
    }
    panic!("the stream ended before {needle}");
}

#[test]
fn the_event_stream_shows_what_the_token_may_see_and_replays_on_reconnect() {
    let api = Api::start();
    for user in ["1001", "1004"] {
        assert_eq!(
            sipp_register(&api.d, user, &format!("demo{user}"), 600, free_port(), &[]).code,
            0
        );
    }
    let supervisor = api.token("1003");
    let r = api.events(&supervisor, "");
    assert_eq!(r.status().as_u16(), 200);
    let mut lines = std::io::BufReader::new(r).lines();
    // 1001 is not the supervisor's: its change is not streamed; 1004's is.
    assert!(api.d.ctl(&["agent", "1001", "not_ready", "x"]).status.success());
    assert!(api.d.ctl(&["agent", "1004", "not_ready", "training"]).status.success());
    let e = next_event(&mut lines, "\"state\":\"not_ready\"", "1001@pbx.test");
    assert_eq!(e["aor"], "1004@pbx.test");
    assert_eq!(
        (e["event"].as_str(), e["state"]["state"].as_str()),
        (Some("agent_state"), Some("not_ready"))
    );
    let seq = e["seq"].as_u64().unwrap();
    // Reconnecting after an earlier event replays what came since.
    let r = api.events(&supervisor, &format!("?since={}", seq - 1));
    let mut again = std::io::BufReader::new(r).lines();
    let replayed = next_event(&mut again, "1004@pbx.test", "1001@pbx.test");
    assert_eq!(replayed["seq"].as_u64(), Some(seq));
}

#[test]
fn history_and_live_calls_follow_the_role_and_metrics_count() {
    let api = Api::start();
    let c1 = callee(&api.d, "1002", "uas_answer.xml", &[]);
    assert_eq!(caller(&api.d, "1001", "1002", 200, "uac_call.xml").code, 0);
    c1.wait();
    let c2 = callee(&api.d, "1004", "uas_answer.xml", &[]);
    assert_eq!(caller(&api.d, "1001", "1004", 200, "uac_call.xml").code, 0);
    c2.wait();
    let (agent, owner) = (api.token("1004"), api.token("1001"));
    let mine = api.get("/api/v1/history", &agent).1;
    let callees: Vec<&str> = mine["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["callee"].as_str().unwrap())
        .collect();
    assert_eq!(callees, ["1004"], "an agent sees only their calls");
    assert_eq!(
        api.get("/api/v1/history", &owner).1["records"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        api.get("/api/v1/history?number=1002", &owner).1["records"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(api.get("/api/v1/history?colour=red", &owner).0, 400);
    assert_eq!(api.get("/api/v1/calls", &agent), (200, Value::Array(Vec::new())));
    let metrics = api.metrics();
    assert!(metrics.contains("switchboard_registrations 2"), "{metrics}");
    assert!(metrics.contains("switchboard_calls 0"), "{metrics}");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    // The two callers streamed tone through the relay for 0.2 s each (how
    // many packets arrive before the BYE varies: 20 here, 15 in a CI run);
    // the calls were stored.
    assert!(value("switchboard_relay_packets_total") > 0.0, "{metrics}");
    assert!(value("switchboard_store_commit_seconds_count") >= 2.0, "{metrics}");
    assert!(value("switchboard_store_commit_seconds_sum") > 0.0, "{metrics}");
    assert_eq!(value("switchboard_dialplan_errors_total"), 0.0);
    assert_eq!(value("switchboard_auth_failures_total"), 0.0);
    // A wrong password counts.
    let run = crate::harness::sipp_register(&api.d, "1002", "wrong", 600, free_port(), &[]);
    assert_ne!(run.code, 0);
    let metrics = api.metrics();
    assert!(metrics.contains("switchboard_auth_failures_total 1\n"), "{metrics}");
}
