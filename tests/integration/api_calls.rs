//! Click-to-call through the API: the user's phone (SIPp) rings first,
//! showing whom it is about to call; once it answers, the target is called
//! and the two are bridged; the record is the user's outgoing call. A
//! phone that refuses ends the call unanswered.

use crate::api::Api;
use crate::calls::{callee, records};
use reqwest::Method;

#[test]
fn click_to_call_rings_the_users_phone_then_calls_the_target() {
    let api = Api::start();
    let (agent, supervisor) = (api.token("1004"), api.token("1003"));
    // Bad requests first: nothing is rung.
    assert_eq!(
        api.send(Method::POST, "/api/v1/calls", &agent, r#"{"to": "sales"}"#).0,
        422
    );
    assert_eq!(
        api.send(Method::POST, "/api/v1/calls", &agent, r#"{"to": "1002", "ring": 1}"#)
            .0,
        400
    );
    let (status, _, p) = api.send(
        Method::POST,
        "/api/v1/calls",
        &supervisor,
        r#"{"to": "1002", "from": "1001"}"#,
    );
    assert_eq!(status, 403, "1001 is not the supervisor's agent: {p}");
    let (status, _, p) = api.send(Method::POST, "/api/v1/calls", &agent, r#"{"to": "1002"}"#);
    assert_eq!(status, 409, "no phone of 1004 is registered: {p}");

    let phone = callee(&api.d, "1004", "uas_hangup.xml", &["-m", "1", "-d", "2000"]);
    let target = callee(&api.d, "1002", "uas_answer.xml", &["-m", "1"]);
    let (status, _, started) = api.send(Method::POST, "/api/v1/calls", &agent, r#"{"to": "1002"}"#);
    assert_eq!(status, 202, "{started}");
    let conversation = started["conversation"].as_u64().unwrap();
    api.d.wait_for_log("click-to-call answered");
    api.d.wait_for_log("call answered");
    let live = api.get("/api/v1/calls", &agent).1;
    let call = live
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conversation"].as_u64() == Some(conversation))
        .unwrap_or_else(|| panic!("{live}"));
    assert_eq!(
        (call["caller"].as_str(), call["callee"].as_str(), call["state"].as_str()),
        (Some("1004"), Some("1002"), Some("connected"))
    );
    let phone = phone.wait();
    assert_eq!(phone.code, 0, "the phone answered and hung up: {}", phone.errors);
    assert!(
        phone.messages.contains("From: \"Call to 1002\" <sip:1002@pbx.test>"),
        "{}",
        phone.messages
    );
    assert_eq!(target.wait().code, 0, "the target was called and hung up on");
    api.d.wait_for_log("call ended");
    let r = records(&api.d);
    let rec = r
        .iter()
        .find(|x| x["conversation"].as_u64() == Some(conversation))
        .unwrap();
    assert_eq!(
        (
            rec["caller"].as_str(),
            rec["callee"].as_str(),
            rec["disposition"].as_str()
        ),
        (Some("1004"), Some("1002"), Some("answered"))
    );
    let outgoing = api.get("/api/v1/history?kind=outgoing", &agent).1;
    assert_eq!(outgoing["records"][0]["conversation"].as_u64(), Some(conversation));

    // A phone that refuses ends it unanswered: nobody else is called.
    let busy = callee(&api.d, "1003", "uas_busy.xml", &["-m", "1"]);
    let (status, _, refused) = api.send(Method::POST, "/api/v1/calls", &supervisor, r#"{"to": "1002"}"#);
    assert_eq!(status, 202);
    assert_eq!(busy.wait().code, 0);
    let conversation = refused["conversation"].as_u64().unwrap();
    // Its record is stored before the core reads the next command.
    api.d.wait_for_log("call ended");
    let r = records(&api.d);
    let ended = r
        .iter()
        .find(|x| x["conversation"].as_u64() == Some(conversation))
        .unwrap();
    assert_eq!(
        (
            ended["caller"].as_str(),
            ended["disposition"].as_str(),
            ended["legs"].as_array().map(Vec::len)
        ),
        (Some("1003"), Some("busy"), Some(1))
    );
}

/// The conversation of the live call between `caller` and `callee`.
fn live_call(api: &Api, token: &str, callee: &str) -> u64 {
    let live = api.get("/api/v1/calls", token).1;
    live.as_array()
        .unwrap()
        .iter()
        .find(|c| c["callee"] == callee && c["state"] == "connected")
        .and_then(|c| c["conversation"].as_u64())
        .unwrap_or_else(|| panic!("no connected call to {callee}: {live}"))
}

#[test]
fn an_agent_transfers_a_call_and_an_admin_hangs_one_up_through_the_api() {
    let api = Api::start();
    let (agent, supervisor, admin) = (api.token("1004"), api.token("1003"), api.token("1002"));
    // A customer (1001) talking with agent 1004 is sent to 1002.
    let phone = callee(&api.d, "1004", "uas_answer.xml", &["-m", "1"]);
    let target = callee(&api.d, "1002", "uas_answer.xml", &["-m", "1"]);
    let customer = crate::calls::caller_in_background(&api.d, "1001", "1004", 3000);
    api.d.wait_for_log("call answered");
    let conversation = live_call(&api, &agent, "1004");
    let path = format!("/api/v1/calls/{conversation}/transfer");
    assert_eq!(api.send(Method::POST, &path, &agent, r#"{"to": "x"}"#).0, 422);
    assert_eq!(
        api.send(Method::POST, &path, &supervisor, r#"{"to": "1002", "party": "1001"}"#)
            .0,
        403,
        "1001 is not the supervisor's agent"
    );
    let (status, _, p) = api.send(Method::POST, &path, &agent, r#"{"to": "1002"}"#);
    assert_eq!(status, 202, "{p}");
    assert_eq!(phone.wait().code, 0, "the agent's phone was released with a BYE");
    api.d.wait_for_log("call answered");
    assert_eq!(customer.wait().code, 0);
    assert_eq!(
        target.wait().code,
        0,
        "the target talked with the customer until they hung up"
    );
    api.d.wait_for_log("call ended");
    let r = records(&api.d);
    let moved = r
        .iter()
        .find(|x| x["transfer"]["from_conversation"].as_u64() == Some(conversation))
        .unwrap_or_else(|| panic!("{r:#?}"));
    assert_eq!(
        (
            moved["transfer"]["by"].as_str(),
            moved["transfer"]["outcome"].as_str(),
            moved["callee"].as_str()
        ),
        (Some("1004"), Some("connected"), Some("1002"))
    );

    // An admin ends a call: both phones get a BYE. The agent does not
    // see that call.
    let phone = callee(&api.d, "1002", "uas_answer.xml", &["-m", "1"]);
    let customer = crate::calls::caller_sipp(&api.d, "1001", "1002", 0, "uac_wait_bye.xml").spawn();
    api.d.wait_for_log("call answered");
    let conversation = live_call(&api, &admin, "1002");
    assert_eq!(
        api.send(Method::DELETE, &format!("/api/v1/calls/{conversation}"), &agent, "")
            .0,
        404,
        "not a call the agent may see"
    );
    assert_eq!(
        api.send(Method::DELETE, &format!("/api/v1/calls/{conversation}"), &admin, "")
            .0,
        204
    );
    assert_eq!((phone.wait().code, customer.wait().code), (0, 0));
    assert_eq!(
        api.send(Method::DELETE, &format!("/api/v1/calls/{conversation}"), &admin, "")
            .0,
        404
    );
}

#[test]
fn after_click_to_call_the_agent_and_the_target_hear_each_other() {
    use crate::monitoring::{band, tone};
    let api = Api::start();
    let agent = api.token("1004");
    let wav = tempfile::tempdir().unwrap();
    let server = format!("127.0.0.1:{}", api.d.port);
    // Both phones answer by themselves: the agent's plays 1000 Hz, the target's 1500 Hz.
    let (phone, _) = crate::baresip_peer::start_baresip_via(&server, "", "1004", &tone(wav.path(), 1000), true, &[]);
    api.d.wait_for_log("registered aor=1004@pbx.test");
    let (target, _) = crate::baresip_peer::start_baresip_via(&server, "", "1002", &tone(wav.path(), 1500), true, &[]);
    api.d.wait_for_log("registered aor=1002@pbx.test");
    let (status, _, started) = api.send(Method::POST, "/api/v1/calls", &agent, r#"{"to": "1002"}"#);
    assert_eq!(status, 202, "{started}");
    api.d.wait_for_log("click-to-call answered");
    api.d.wait_for_log("call answered");
    // The call lasts three seconds; then the agent's CRM hangs it up.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let conversation = started["conversation"].as_u64().unwrap();
    assert_eq!(
        api.send(Method::DELETE, &format!("/api/v1/calls/{conversation}"), &agent, "")
            .0,
        204
    );
    api.d.wait_for_log("call ended");
    let (agent_dir, target_dir) = (phone.stop(), target.stop());
    let heard_by_agent = crate::baresip_peer::received_audio(agent_dir.path());
    let heard_by_target = crate::baresip_peer::received_audio(target_dir.path());
    assert_eq!((heard_by_agent.len(), heard_by_target.len()), (1, 1));
    let at_agent = band(&heard_by_agent[0], 0.5, 1.5, (1450, 1550));
    let at_target = band(&heard_by_target[0], 0.5, 1.5, (950, 1050));
    assert!(
        at_agent > 0.05 && at_target > 0.05,
        "agent heard the target {at_agent}, target heard the agent {at_target}"
    );
}

#[test]
fn an_agent_holds_a_call_through_the_api_and_the_customer_hears_music_then_the_agent() {
    use crate::baresip_peer::{music_levels, received_audio, rms, silence_wav, sox};
    let api = Api::start();
    let agent = api.token("1001");
    let wav = tempfile::tempdir().unwrap();
    // The customer (baresip, 1004) answers and records; the agent (SIPp,
    // 1001) plays 440 Hz for eight seconds.
    let server = format!("127.0.0.1:{}", api.d.port);
    let (customer, _) =
        crate::baresip_peer::start_baresip_via(&server, "", "1004", &silence_wav(wav.path(), 20), true, &[]);
    api.d.wait_for_log("registered aor=1004@pbx.test");
    let call = crate::calls::caller_in_background(&api.d, "1001", "1004", 8000);
    api.d.wait_for_log("call answered");
    let answered = std::time::Instant::now();
    let conversation = live_call(&api, &agent, "1004");
    let path = format!("/api/v1/calls/{conversation}/hold");
    // Held from 2 s to 4.5 s after the answer: the timeline of the call.
    std::thread::sleep(std::time::Duration::from_millis(2000));
    assert_eq!(api.send(Method::PUT, &path, &agent, r#"{"on": true}"#).0, 204);
    let held_at = answered.elapsed().as_secs_f64();
    assert_eq!(
        api.send(Method::PUT, &path, &agent, r#"{"on": true}"#).0,
        409,
        "already on hold"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(api.send(Method::PUT, &path, &agent, r#"{"on": false}"#).0, 204);
    let resumed_at = answered.elapsed().as_secs_f64();
    assert_eq!(call.wait().code, 0);
    api.d.wait_for_log("call ended");
    let dir = customer.stop();
    let recorded = received_audio(dir.path());
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let file = recorded[0].to_str().unwrap();
    let tone = |start: f64| {
        rms(&sox(&[
            file,
            "-n",
            "trim",
            &format!("{start:.2}"),
            "0.8",
            "sinc",
            "420-460",
            "stat",
        ]))
    };
    let (before, held, after) = (tone(0.5), tone(held_at + 0.6), tone(resumed_at + 0.6));
    assert!(
        before > 0.05 && after > 0.05,
        "the agent before ({before}) and after ({after}) the hold"
    );
    assert!(held < before * 0.3, "not the agent while held ({held} vs {before})");
    let (music, original) = music_levels(file, &format!("{:.2}", held_at + 0.5), "1.2");
    assert!(
        music > original * 0.5 && music < original * 2.0,
        "the customer heard the music (RMS {music}, the file's {original})"
    );
}

#[test]
fn an_agent_transfers_attended_through_the_api_after_a_consult_call() {
    let api = Api::start();
    let agent = api.token("1004");
    // Agent 1004's phone answers two calls: a customer's, then its own
    // consult call to 1002 (placed with click-to-call).
    let phone = callee(&api.d, "1004", "uas_answer.xml", &["-m", "2"]);
    let target = callee(&api.d, "1002", "uas_answer.xml", &["-m", "1"]);
    let customer = crate::calls::caller_in_background(&api.d, "1001", "1004", 4000);
    api.d.wait_for_log("call answered");
    let first = live_call(&api, &agent, "1004");
    let (status, _, consult) = api.send(Method::POST, "/api/v1/calls", &agent, r#"{"to": "1002"}"#);
    assert_eq!(status, 202, "{consult}");
    let consult = consult["conversation"].as_u64().unwrap();
    api.d.wait_for_log("click-to-call answered");
    api.d.wait_for_log("call answered");
    let path = format!("/api/v1/calls/{first}/transfer");
    assert_eq!(
        api.send(Method::POST, &path, &agent, r#"{"to": "1002", "to_call": 1}"#)
            .0,
        422
    );
    let (status, _, p) = api.send(Method::POST, &path, &agent, &format!(r#"{{"to_call": {consult}}}"#));
    assert_eq!(status, 202, "{p}");
    api.d.wait_for_log("attended transfer");
    assert_eq!(phone.wait().code, 0, "the agent's two calls were hung up");
    assert_eq!(customer.wait().code, 0);
    assert_eq!(
        target.wait().code,
        0,
        "the customer and the target talked until the customer hung up"
    );
    api.d.wait_for_log("call ended");
    let r = records(&api.d);
    let customers = r.iter().find(|x| x["conversation"].as_u64() == Some(first)).unwrap();
    assert_eq!(customers["transferred_to"], "1002", "{r:#?}");
}
