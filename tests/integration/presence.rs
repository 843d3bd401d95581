//! Presence with real peers: a SIPp watcher SUBSCRIBEs to a user and gets
//! NOTIFYs with the right PIDF basic status as the user registers and
//! unregisters; other packages and unknown users are refused.

use crate::harness::{free_port, sipp_register, Daemon, Sipp};
use crate::raw_client::RawClient;

#[test]
fn watcher_sees_registration_and_unregistration() {
    let d = Daemon::start("");
    let watcher = Sipp::new("subscribe_presence.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", "1002", "-au", "1001", "-ap", "demo1001", "-key", "watcher", "1001",
        ])
        .spawn();
    d.wait_for_log("subscription created");
    let port = free_port();
    assert_eq!(sipp_register(&d, "1002", "demo1002", 600, port, &[]).code, 0);
    // Unregister (Expires: 0): the 200 lists no binding, so SIPp's own check fails; the daemon's state is what counts.
    sipp_register(&d, "1002", "demo1002", 0, port, &[]);
    assert!(d.registered_contacts("1002@pbx.test").is_empty());
    let run = watcher.wait();
    assert_eq!(run.code, 0, "{}\n{}", run.errors, run.messages);
    let states: Vec<&str> = run.logs.lines().filter_map(|l| l.strip_prefix("notify ")).collect();
    assert_eq!(
        states,
        vec!["<basic>closed</basic>", "<basic>open</basic>", "<basic>closed</basic>"]
    );
}

#[test]
fn other_packages_and_unknown_users_are_refused() {
    let d = Daemon::start("");
    let mut c = RawClient::udp(d.addr());
    let r = c
        .send_request(
            "SUBSCRIBE",
            "sip:1002@pbx.test",
            "1001",
            "Event: message-summary\r\nContact: <sip:1001@127.0.0.1:9>\r\n",
        )
        .unwrap();
    assert_eq!(r.status(), Some(489));
    assert!(r
        .header(&switchboard::sip::HeaderName::AllowEvents)
        .unwrap()
        .contains("presence"));
    // Unauthenticated: challenged before anything about the user is revealed.
    let r = c
        .send_request(
            "SUBSCRIBE",
            "sip:7777@pbx.test",
            "1001",
            "Event: presence\r\nContact: <sip:1001@127.0.0.1:9>\r\n",
        )
        .unwrap();
    assert_eq!(r.status(), Some(407));
}
