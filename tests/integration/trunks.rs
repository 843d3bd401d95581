//! Trunks to providers, with SIPp playing the provider: switchboard
//! registers (digest, checked by the provider), refreshes before expiry,
//! and shows the status in `ctl trunks`.

use crate::harness::{default_dialplan, free_port, Daemon, Sipp};
use switchboard::sip::{response::response_to, HeaderName, Method, SipMessage};

/// A `[[trunks]]` entry for a provider at 127.0.0.1:`port`.
fn trunk(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[trunks]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nusername = \"acme\"\npassword = \"s3cret\"\n{extra}"
    )
}

fn trunk_status(d: &Daemon, name: &str) -> serde_json::Value {
    let out = d.ctl(&["--json", "trunks"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.into_iter().find(|t| t["name"] == name).expect("trunk listed")
}

#[test]
fn registers_with_the_provider_answering_its_challenge_and_refreshes() {
    let port = free_port();
    let provider = Sipp::new("provider_register.xml", port).spawn();
    let d = Daemon::start_with("", &trunk("main", port, "register = true\n"), &default_dialplan());
    d.saw_log("trunk registered trunk=main expires_s=2");
    // Refreshed at 80 % of the 2 s granted, answering a new challenge.
    d.saw_log("trunk registered trunk=main expires_s=3600");
    let run = provider.wait();
    assert_eq!(
        run.code, 0,
        "the provider accepted both answers: {}\n{}",
        run.errors, run.logs
    );
    assert!(run.logs.contains("register sip:127.0.0.1 first"), "{}", run.logs);
    let t = trunk_status(&d, "main");
    assert_eq!(
        (t["status"].as_str(), t["expires_s"].as_u64()),
        (Some("registered"), Some(3600)),
        "{t}"
    );
}

#[test]
fn a_wrong_password_shows_the_trunk_failing_with_the_providers_code() {
    let port = free_port();
    let provider = Sipp::new("provider_register.xml", port).spawn();
    let d = Daemon::start_with(
        "",
        &trunk("main", port, "register = true\n").replace("s3cret", "wrong"),
        &default_dialplan(),
    );
    d.saw_log("trunk registration failed trunk=main code=403");
    let t = trunk_status(&d, "main");
    assert_eq!(
        (t["status"].as_str(), t["last_code"].as_u64()),
        (Some("failing"), Some(403)),
        "{t}"
    );
    assert_eq!(t["failures"], 1);
    assert_ne!(provider.wait().code, 0, "the provider saw a bad answer");
}

/// 1001 (allowed out) calls an external number; it goes out through the
/// account's trunk, which challenges the INVITE.
fn call_out(d: &Daemon) -> crate::harness::SippRun {
    crate::calls::caller(d, "1001", "0611223344", 500, "uac_call.xml")
}

#[test]
fn an_external_call_goes_out_through_the_trunk_answering_its_challenge() {
    let port = free_port();
    let mp = free_port().to_string();
    let provider = Sipp::new("provider_invite.xml", port).args(&["-mp", &mp]).spawn();
    let d = Daemon::start_with_account(&trunk("main", port, ""), "trunks = [\"main\"]\n");
    let uac = call_out(&d);
    let run = provider.wait();
    assert_eq!(
        run.code, 0,
        "the provider took the answered challenge: {}\n{}",
        run.errors, run.messages
    );
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    // The number in the Request-URI, the trunk's user in From.
    assert!(run.logs.contains("request sip:0611223344@127.0.0.1"), "{}", run.logs);
    assert!(run.logs.contains("<sip:acme@127.0.0.1>;tag="), "{}", run.logs);
    let r = crate::calls::records(&d);
    assert_eq!(
        (
            r[0]["callee"].as_str(),
            r[0]["direction"].as_str(),
            r[0]["disposition"].as_str()
        ),
        (Some("0611223344"), Some("outbound"), Some("answered"))
    );
}

#[test]
fn a_failing_provider_makes_the_call_fail_over_to_the_next_trunk() {
    let (down, up) = (free_port(), free_port());
    let mp = free_port().to_string();
    let first = Sipp::new("provider_down.xml", down).spawn();
    let second = Sipp::new("provider_invite.xml", up).args(&["-mp", &mp]).spawn();
    let sections = trunk("down", down, "") + &trunk("up", up, "");
    let d = Daemon::start_with_account(&sections, "trunks = [\"down\", \"up\"]\n");
    let uac = call_out(&d);
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    assert_eq!(first.wait().code, 0, "the first provider was tried");
    assert_eq!(second.wait().code, 0, "the second took the call");
    d.wait_for_log("failing over to the next trunk trunk=up");
    assert_eq!(crate::calls::records(&d)[0]["disposition"], "answered");
}

#[test]
fn without_a_trunk_an_external_call_gets_503() {
    let d = Daemon::start("");
    let uac = crate::calls::caller(&d, "1001", "0611223344", 0, "uac_fail.xml");
    assert_eq!(uac.code, 0, "{}", uac.errors);
    assert!(uac.logs.contains("final 503"), "{}", uac.logs);
}

/// A provider at 127.0.0.1:`port` (calls by address, no registration)
/// and the demo account's DIDs: +34910000001 → 1004, +34910000002 → the
/// dialplan.
fn did_daemon(port: u16) -> Daemon {
    let sections = format!("[[trunks]]\nname = \"prov\"\naddress = \"127.0.0.1:{port}\"\n");
    let keys = "trunks = [\"prov\"]\n\
                [[accounts.dids]]\nnumber = \"+34910000001\"\nto = \"1004\"\n\
                [[accounts.dids]]\nnumber = \"+34910000002\"\nto = \"dialplan\"\n";
    Daemon::start_with_account(&sections, keys)
}

/// The provider at `port` calls `did`, holding an answered call for 500 ms.
fn provider_calls(d: &Daemon, port: u16, did: &str, extra: &[&str]) -> crate::harness::SippRun {
    let mp = free_port().to_string();
    Sipp::new("provider_call.xml", port)
        .target(&d.target())
        .args(&["-s", did, "-d", "500", "-mp", &mp])
        .args(extra)
        .file("audio.al", &crate::calls::tone_alaw(1))
        .run()
}

#[test]
fn a_call_to_a_did_reaches_its_user_with_the_customers_number() {
    let port = free_port();
    let d = did_daemon(port);
    let callee = crate::calls::callee(&d, "1004", "uas_answer.xml", &[]);
    let run = provider_calls(&d, port, "+34910000001", &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.errors, run.messages);
    assert_eq!(callee.wait().code, 0);
    let r = crate::calls::records(&d);
    assert_eq!(
        (
            r[0]["caller"].as_str(),
            r[0]["callee"].as_str(),
            r[0]["disposition"].as_str()
        ),
        (Some("+34600111222"), Some("1004"), Some("answered")),
        "the caller is the number P-Asserted-Identity names"
    );
    d.wait_for_log("call from a trunk trunk=prov did=+34910000001");
}

/// The provider calls `did` and is refused with `code`; the daemon logs `line`.
fn refused(did: &str, code: u16, line: &str) {
    let port = free_port();
    let d = did_daemon(port);
    let run = provider_calls(&d, port, did, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.errors, run.messages);
    assert!(run.logs.contains(&format!("refused {code}")), "{}", run.logs);
    d.wait_for_log(line);
}

#[test]
fn an_unknown_did_is_refused_with_404() {
    refused(
        "+34999999999",
        404,
        "call from a trunk to an unknown DID refused trunk=prov number=+34999999999",
    );
}

#[test]
fn a_call_from_a_trunk_may_not_go_out_through_one_unless_the_dialplan_names_it() {
    // The shipped dialplan sends +34910000002 (a long number) out as
    // external, without naming a trunk: refused.
    refused(
        "+34910000002",
        403,
        "outbound call refused: no permission caller=+34600111222",
    );
}

#[test]
fn a_provider_sending_by_ip_is_taken_from_its_inbound_ips_only() {
    // The trunk's own address is elsewhere; its calls come from 127.0.0.2.
    let d = {
        let sections = "[[trunks]]\nname = \"byip\"\naddress = \"127.0.0.9:5060\"\ninbound_ips = [\"127.0.0.2\"]\n";
        let keys = "[[accounts.dids]]\nnumber = \"+34910000001\"\nto = \"1004\"\n";
        Daemon::start_with_account(sections, keys)
    };
    let callee = crate::calls::callee(&d, "1004", "uas_answer.xml", &[]);
    let run = provider_calls(&d, free_port(), "+34910000001", &["-i", "127.0.0.2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.errors, run.messages);
    assert_eq!(callee.wait().code, 0);
    // The same INVITE from an address not listed is a user's call: challenged.
    let mut raw = crate::raw_client::RawClient::udp(d.addr());
    let r = raw
        .send_request("INVITE", "sip:+34910000001@127.0.0.1", "stranger", "")
        .unwrap();
    assert_eq!(r.status(), Some(407));
}

#[test]
fn a_remote_extension_rings_its_sip_uri_or_goes_out_through_a_trunk() {
    let (remote, provider_port) = (free_port(), free_port());
    let (mp1, mp2) = (free_port().to_string(), free_port().to_string());
    let phone = Sipp::new("uas_answer.xml", remote).args(&["-mp", &mp1]).spawn();
    let provider = Sipp::new("provider_invite.xml", provider_port)
        .args(&["-mp", &mp2])
        .spawn();
    let keys = format!(
        "trunks = [\"main\"]\n\
         [[accounts.remote_extensions]]\nnumber = \"2100\"\nname = \"Home office\"\ntarget = \"sip:ana@127.0.0.1:{remote}\"\n\
         [[accounts.remote_extensions]]\nnumber = \"2200\"\ntarget = \"0611223344\"\n"
    );
    let d = Daemon::start_with_account(&trunk("main", provider_port, ""), &keys);
    // Listed in the directory with the users and groups.
    let out = d.ctl(&["directory"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |n: &str| dir.iter().find(|e| e["number"] == n).cloned().unwrap_or_default();
    assert_eq!(
        (find("2100")["kind"].as_str(), find("2100")["name"].as_str()),
        (Some("remote"), Some("Home office"))
    );
    assert_eq!(find("2200")["detail"], "0611223344");
    assert_eq!(
        (find("1004")["kind"].as_str(), find("2001")["kind"].as_str()),
        (Some("user"), Some("group"))
    );
    // 1004 may not call out, yet reaches both: the admin chose the numbers.
    let first = crate::calls::caller(&d, "1004", "2100", 300, "uac_call.xml");
    assert_eq!(first.code, 0, "{}\n{}", first.errors, first.messages);
    let run = phone.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    assert!(
        run.messages.contains("INVITE sip:ana@127.0.0.1:"),
        "rang the target URI"
    );
    let second = crate::calls::caller(&d, "1004", "2200", 300, "uac_call.xml");
    assert_eq!(second.code, 0, "{}\n{}", second.errors, second.messages);
    let run = provider.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    assert!(run.logs.contains("request sip:0611223344@127.0.0.1"), "{}", run.logs);
    let callees: Vec<String> = crate::calls::records(&d)
        .iter()
        .map(|r| r["callee"].as_str().unwrap().to_string())
        .collect();
    // The record names the party the answered leg faced.
    assert_eq!(callees, ["2100", "0611223344"]);
}

/// What the provider saw of one call out placed by `caller` to `dialled`
/// (with `extra` SIPp options for the caller, and its scenario).
fn presented(d: &Daemon, provider_port: u16, caller: &str, dialled: &str, scenario: &str, extra: &[&str]) -> String {
    let mp = free_port().to_string();
    let provider = Sipp::new("provider_invite.xml", provider_port)
        .args(&["-mp", &mp])
        .spawn();
    let (cmp, pass) = (free_port().to_string(), format!("demo{caller}"));
    let uac = Sipp::new(scenario, free_port())
        .target(&d.target())
        .args(&[
            "-s", dialled, "-au", caller, "-ap", &pass, "-key", "caller", caller, "-d", "200", "-mp", &cmp,
        ])
        .args(extra)
        .file("audio.al", &crate::calls::tone_alaw(1))
        .run();
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    let run = provider.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    // What the provider received, with its log lines.
    format!("{}\n{}", run.logs, run.messages)
}

#[test]
fn caller_id_follows_the_group_the_account_and_the_users_allowed_choice() {
    let port = free_port();
    let keys = "trunks = [\"main\"]\ncaller_id = \"+34910000000\"\ncaller_id_choice = true\n\
                [[accounts.users]]\nextension = \"1005\"\npassword = \"demo1005\"\noutbound = true\ncaller_ids = [\"+34910000007\"]\n\
                [[accounts.groups]]\nnumber = \"2300\"\nmembers = [\"1001\"]\ncaller_id = \"+34910000099\"\n";
    let d = Daemon::start_with_account(&trunk("main", port, "caller_id_in = \"both\"\n"), keys);
    // A member of a group with its own caller ID presents it (in From and
    // P-Asserted-Identity: this trunk has caller_id_in = "both").
    let log = presented(&d, port, "1001", "0611223344", "uac_call.xml", &[]);
    assert!(log.contains("<sip:+34910000099@127.0.0.1>;tag="), "{log}");
    assert!(
        log.contains("P-Asserted-Identity: <sip:+34910000099@127.0.0.1>"),
        "{log}"
    );
    // Others present the account's.
    let log = presented(&d, port, "1005", "0611223344", "uac_call.xml", &[]);
    assert!(log.contains("<sip:+34910000000@127.0.0.1>;tag="), "{log}");
    // A choice of the user's own, asked for in a header, is presented...
    let log = presented(
        &d,
        port,
        "1005",
        "0611223344",
        "uac_call_cid.xml",
        &["-key", "cid", "+34910000007"],
    );
    assert!(log.contains("<sip:+34910000007@127.0.0.1>;tag="), "{log}");
    // ...one that is not the user's is replaced by the default and logged.
    let log = presented(
        &d,
        port,
        "1005",
        "0611223344",
        "uac_call_cid.xml",
        &["-key", "cid", "+34666666666"],
    );
    assert!(
        log.contains("<sip:+34910000000@127.0.0.1>;tag=") && !log.contains("+34666666666"),
        "{log}"
    );
    d.wait_for_log("caller ID not allowed for this user; the default is presented user=1005 caller_id=+34666666666");
    // *67: anonymous, the number only in P-Asserted-Identity, Privacy: id.
    let log = presented(&d, port, "1005", "*670611223344", "uac_call.xml", &[]);
    assert!(
        log.contains("request sip:0611223344@127.0.0.1"),
        "the prefix is not dialled: {log}"
    );
    assert!(log.contains("\"Anonymous\" <sip:anonymous@anonymous.invalid>"), "{log}");
    assert!(
        log.contains("P-Asserted-Identity: <sip:+34910000000@127.0.0.1>"),
        "{log}"
    );
    assert!(log.contains("Privacy: id"), "{log}");
}

#[test]
fn a_provider_that_is_down_shows_the_trunk_failing_then_it_recovers_when_told_to_retry() {
    let port = free_port();
    let provider = Sipp::new("provider_outage.xml", port).spawn();
    let d = Daemon::start_with("", &trunk("main", port, "register = true\n"), &default_dialplan());
    d.saw_log("trunk registration failed trunk=main code=503 reason=Service Unavailable retry_in_s=1");
    // The provider's Retry-After (1 s), not the 30 s default backoff.
    d.saw_log("trunk registered trunk=main expires_s=3600");
    assert_eq!(provider.wait().code, 0);
    let t = trunk_status(&d, "main");
    assert_eq!(
        (t["status"].as_str(), t["failures"].as_u64()),
        (Some("registered"), Some(0)),
        "{t}"
    );
    let events: Vec<String> = d
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("TrunkStatus"))
        .cloned()
        .collect();
    assert!(events.len() >= 2, "status changes are domain events: {events:?}");
}

#[test]
fn numbers_go_to_the_provider_in_the_format_it_wants() {
    let port = free_port();
    let extra = "number_format = \"e164\"\ncountry_code = \"34\"\nnational_prefix = \"\"\n";
    let d = Daemon::start_with_account(&trunk("main", port, extra), "trunks = [\"main\"]\n");
    let log = presented(&d, port, "1001", "611223344", "uac_call.xml", &[]);
    assert!(log.contains("request sip:+34611223344@127.0.0.1"), "{log}");
    let log = presented(&d, port, "1001", "0033123456789", "uac_call.xml", &[]);
    assert!(log.contains("request sip:+33123456789@127.0.0.1"), "{log}");
}

#[test]
fn a_tcp_trunk_registers_over_a_connection_switchboard_opens() {
    let port = free_port();
    let provider = Sipp::new("provider_register.xml", port).args(&["-t", "t1"]).spawn();
    let d = Daemon::start_with(
        "",
        &trunk("main", port, "register = true\ntransport = \"tcp\"\n"),
        &default_dialplan(),
    );
    d.saw_log("trunk registered trunk=main expires_s=2");
    d.saw_log("trunk registered trunk=main expires_s=3600");
    let run = provider.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    assert!(run.messages.contains("Via: SIP/2.0/TCP "), "{}", run.messages);
    assert!(run.messages.contains(";transport=tcp>"), "the Contact names TCP");
}

/// A provider's registrar over TLS (a rustls server with `cert`/`key`):
/// answers each REGISTER on its one connection 200 for an hour; returns
/// the requests it got.
fn tls_registrar(
    listener: std::net::TcpListener,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::{Read, Write};
    use tokio_rustls::rustls;
    let config = switchboard::sip::tls::server_config(cert, key).unwrap();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let (mut seen, mut buf) = (Vec::new(), Vec::new());
        while seen.is_empty() {
            let mut chunk = [0u8; 4096];
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            while let Ok((skip, Some(len))) = switchboard::sip::message::frame_len(&buf, 65536) {
                let frame: Vec<u8> = buf.drain(..skip + len).skip(skip).collect();
                let req = switchboard::sip::SipMessage::parse_framed(bytes::Bytes::from(frame)).unwrap();
                let mut ok = switchboard::sip::response::response_to(&req, 200, None, "prov");
                ok.push_header(switchboard::sip::HeaderName::Expires, "3600");
                tls.write_all(&ok.to_bytes()).unwrap();
                tls.flush().unwrap();
                seen.push(String::from_utf8_lossy(&req.to_bytes()).into_owned());
            }
        }
        seen
    })
}

/// A daemon with a TLS trunk to a rustls registrar; the trunk's `ca_file`
/// is the registrar's certificate, or another one when `trusted` is false.
fn tls_trunk(trusted: bool) -> (Daemon, std::thread::JoinHandle<Vec<String>>, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, _) = crate::tls::certificate(certs.path(), "provider");
    let (other, _, _) = crate::tls::certificate(certs.path(), "other");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let registrar = tls_registrar(listener, &cert, &key);
    let ca = if trusted { &cert } else { &other };
    let extra = format!("register = true\ntransport = \"tls\"\nca_file = \"{}\"\n", ca.display());
    let d = Daemon::start_with("", &trunk("main", port, &extra), &default_dialplan());
    (d, registrar, certs)
}

#[test]
fn a_tls_trunk_checks_the_providers_certificate_and_registers() {
    let (d, registrar, _certs) = tls_trunk(true);
    d.saw_log("trunk registered trunk=main expires_s=3600");
    let seen = registrar.join().unwrap();
    assert!(seen[0].starts_with("REGISTER sip:127.0.0.1 SIP/2.0"), "{seen:?}");
    assert!(
        seen[0].contains("Via: SIP/2.0/TLS ") && seen[0].contains(";transport=tls>"),
        "{seen:?}"
    );
}

#[test]
fn a_tls_trunk_whose_certificate_is_not_trusted_is_not_connected() {
    let (d, registrar, _certs) = tls_trunk(false);
    d.saw_log("cannot connect peer=127.0.0.1:");
    assert!(
        registrar.join().unwrap().is_empty(),
        "no REGISTER reached a provider we do not trust"
    );
}

/// A provider on a UDP socket of its own: gives every request the daemon
/// sends to `answer` (whose 200, if any, goes back; a REGISTER's says 3600
/// s) until the daemon has registered twice or 20 s have passed; returns
/// the number of REGISTERs and the methods seen, in order.
fn udp_provider(
    provider: &std::net::UdpSocket,
    mut answer: impl FnMut(&SipMessage) -> Option<SipMessage>,
) -> (usize, Vec<String>) {
    provider
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let (mut registers, mut seen) = (0, Vec::new());
    let mut buf = [0u8; 65536];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while registers < 2 && std::time::Instant::now() < deadline {
        let (n, from) = provider
            .recv_from(&mut buf)
            .expect("the daemon keeps talking to the provider");
        let req = SipMessage::parse_datagram(bytes::Bytes::copy_from_slice(&buf[..n])).unwrap();
        seen.push(format!("{:?}", req.method()));
        let Some(mut ok) = answer(&req) else { continue };
        if req.method() == Some(&Method::Register) {
            registers += 1;
            ok.push_header(HeaderName::Expires, "3600");
        }
        provider.send_to(&ok.to_bytes(), from).unwrap();
    }
    (registers, seen)
}

#[test]
fn a_provider_that_stops_answering_is_failing_and_is_registered_again_when_it_is_back() {
    let provider = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = provider.local_addr().unwrap().port();
    let sections = format!(
        "[sip]\nt1_ms = 50\n{}",
        trunk("main", port, "register = true\nkeepalive_s = 1\n")
    );
    let d = Daemon::start_with("", &sections, &default_dialplan());
    // From the first OPTIONS on, the provider "restarts" and answers
    // nothing for 4 s (longer than 64·T1), then answers again.
    let mut silent_until = None::<std::time::Instant>;
    let (registers, seen) = udp_provider(&provider, |req| {
        if req.method() == Some(&Method::Options) && silent_until.is_none() {
            silent_until = Some(std::time::Instant::now() + std::time::Duration::from_secs(4));
        }
        let silent = silent_until.is_some_and(|t| std::time::Instant::now() < t);
        (!silent).then(|| response_to(req, 200, None, "prov"))
    });
    assert_eq!(registers, 2, "registered again after the silence: {seen:?}");
    d.wait_for_log("provider does not answer OPTIONS trunk=main");
    d.wait_for_log("provider answers again; registering trunk=main");
    d.saw_log("trunk registered trunk=main expires_s=3600");
}

#[test]
fn a_trunk_given_by_name_is_found_with_dns_srv() {
    use crate::dns::{serve, Record};
    let (best, worse) = (free_port(), free_port());
    let dns = serve(vec![
        (
            "_sip._udp.prov.test.",
            Record::Srv {
                priority: 20,
                weight: 0,
                port: worse,
                target: "backup.prov.test",
            },
        ),
        (
            "_sip._udp.prov.test.",
            Record::Srv {
                priority: 10,
                weight: 5,
                port: best,
                target: "sip1.prov.test",
            },
        ),
        ("sip1.prov.test.", Record::A("127.0.0.1".parse().unwrap())),
        ("backup.prov.test.", Record::A("127.0.0.1".parse().unwrap())),
    ]);
    let provider = Sipp::new("provider_register.xml", best).spawn();
    let sections = format!(
        "[dns]\nservers = [\"127.0.0.1:{}\"]\n{}",
        dns.port,
        trunk("main", 0, "register = true\n").replace("127.0.0.1:0", "prov.test")
    );
    let d = Daemon::start_with("", &sections, &default_dialplan());
    // The lowest priority's target, at the port its SRV record gives.
    d.saw_log(&format!(
        "trunk address found trunk=main name=prov.test address=127.0.0.1:{best}"
    ));
    d.saw_log("trunk registered trunk=main expires_s=3600");
    assert_eq!(provider.wait().code, 0);
    let t = trunk_status(&d, "main");
    assert_eq!(t["address"], format!("127.0.0.1:{best}"), "{t}");
}

#[test]
fn when_the_provider_sees_us_from_another_port_the_trunk_registers_again() {
    let provider = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = provider.local_addr().unwrap().port();
    let sections = trunk("main", port, "register = true\nkeepalive_s = 1\n");
    let d = Daemon::start_with("", &sections, &default_dialplan());
    // A NAT in front of the daemon: the provider sees it at port 1111,
    // until the second OPTIONS, which comes "from" 2222.
    let mut pings = 0;
    let (registers, _) = udp_provider(&provider, |req| {
        if req.method() == Some(&Method::Options) {
            pings += 1;
        }
        let mapped = if pings >= 2 { 2222 } else { 1111 };
        let via = req.header(&HeaderName::Via).unwrap();
        let seen_via = via.replace(";rport", &format!(";received=198.51.100.7;rport={mapped}"));
        let text = String::from_utf8(response_to(req, 200, None, "prov").to_bytes().to_vec())
            .unwrap()
            .replacen(via, &seen_via, 1);
        Some(SipMessage::parse_datagram(bytes::Bytes::from(text)).unwrap())
    });
    assert_eq!(
        (registers, pings),
        (2, 2),
        "registered again right after the mapping moved"
    );
    d.wait_for_log(
        "the provider sees us at another address; registering trunk=main was=198.51.100.7:1111 now=198.51.100.7:2222",
    );
}

#[test]
fn an_outbound_proxy_takes_every_request_with_a_route_to_itself() {
    let port = free_port();
    let provider = Sipp::new("provider_register.xml", port).spawn();
    let extra = format!("register = true\noutbound_proxy = \"127.0.0.1:{port}\"\n");
    // The provider's own name is never looked up: only the proxy is reached.
    let sections = trunk("main", 0, &extra).replace("127.0.0.1:0", "sip.provider.invalid");
    let d = Daemon::start_with("", &sections, &default_dialplan());
    d.saw_log("trunk registered trunk=main expires_s=3600");
    let run = provider.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    assert!(
        run.messages.contains("REGISTER sip:sip.provider.invalid SIP/2.0"),
        "{}",
        run.messages
    );
    assert!(
        run.messages.contains(&format!("Route: <sip:127.0.0.1:{port};lr>")),
        "{}",
        run.messages
    );
}

#[test]
fn a_challenge_for_another_realm_is_not_answered() {
    let port = free_port();
    let _provider = Sipp::new("provider_register.xml", port).spawn();
    let extra = "register = true\nrealm = \"other.test\"\n";
    let d = Daemon::start_with("", &trunk("main", port, extra), &default_dialplan());
    d.saw_log("trunk registration failed trunk=main code=401 reason=challenge for another realm");
}

#[test]
fn a_tcp_trunk_given_by_name_connects_where_dns_srv_points() {
    use crate::dns::{serve, Record};
    let port = free_port();
    let dns = serve(vec![
        (
            "_sip._tcp.prov.test.",
            Record::Srv {
                priority: 10,
                weight: 5,
                port,
                target: "sip1.prov.test",
            },
        ),
        ("sip1.prov.test.", Record::A("127.0.0.1".parse().unwrap())),
    ]);
    let provider = Sipp::new("provider_register.xml", port).args(&["-t", "t1"]).spawn();
    let sections = format!(
        "[dns]\nservers = [\"127.0.0.1:{}\"]\n{}",
        dns.port,
        trunk("main", 0, "register = true\ntransport = \"tcp\"\n").replace("127.0.0.1:0", "prov.test")
    );
    let d = Daemon::start_with("", &sections, &default_dialplan());
    // The connection is opened to the address the SRV record gave.
    d.saw_log(&format!(
        "trunk address found trunk=main name=prov.test address=127.0.0.1:{port}"
    ));
    d.saw_log("trunk registered trunk=main expires_s=3600");
    let run = provider.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    assert!(run.messages.contains("Via: SIP/2.0/TCP "), "{}", run.messages);
}
