//! SIP over TLS: phones register, call and chat over TLS connections
//! (baresip, and a rustls client of our own: this machine's SIPp is built
//! without TLS); a TLS-only account refuses its users elsewhere; SIGHUP
//! swaps the certificate for new connections.

use crate::baresip_peer::{received_audio, rms, silence_wav, sox, start_baresip_via};
use crate::harness::{default_dialplan, free_port, Daemon};
use crate::raw_client::RawClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A self-signed certificate for 127.0.0.1 and ::1, written as PEM files
/// `NAME.pem` and `NAME.key` in `dir`; returns their paths and the DER.
pub fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "::1".into()]).unwrap();
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert, key, c.cert.der().to_vec())
}

/// A daemon with TLS on a port of its own, the demo account, and
/// `secure.test` (user 3001, password s3001) that accepts only TLS.
fn tls_daemon(cert: &Path, key: &Path) -> (Daemon, SocketAddr) {
    tls_daemon_with(cert, key, "")
}

/// `tls_daemon` with `sip` settings (the body of a `[sip]` table).
fn tls_daemon_with(cert: &Path, key: &Path, sip: &str) -> (Daemon, SocketAddr) {
    let port = free_port();
    let sip = if sip.is_empty() {
        String::new()
    } else {
        format!("[sip]\n{sip}")
    };
    let sections = format!(
        "{sip}[tls]\nport = {port}\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
         [[accounts]]\ndomain = \"secure.test\"\nrequire_tls = true\n\
         [[accounts.users]]\nextension = \"3001\"\npassword = \"s3001\"\n",
        cert.display(),
        key.display()
    );
    let d = Daemon::start_with("", &sections, &default_dialplan());
    (d, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn a_tls_only_account_registers_over_tls_and_is_refused_over_udp_and_tcp() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(certs.path(), "server");
    let (d, tls) = tls_daemon(&cert, &key);
    for mut plain in [RawClient::udp(d.addr()), RawClient::tcp(d.addr())] {
        plain.domain = "secure.test".into();
        let r = plain.register("sip:secure.test", "3001", "s3001", 300).unwrap();
        assert_eq!((r.status(), r.reason()), (Some(403), "TLS Required"));
    }
    assert!(d.registered_contacts("3001@secure.test").is_empty());
    let mut c = RawClient::tls(tls, &der);
    c.domain = "secure.test".into();
    // A sips: Request-URI (RFC 3261 §19.1) is taken like sip: over TLS.
    let r = c.register("sips:secure.test", "3001", "s3001", 300).unwrap();
    assert_eq!(r.status(), Some(200));
    let regs = d.registrations();
    let reg = regs
        .iter()
        .find(|r| r["aor"] == "3001@secure.test")
        .expect("3001 listed");
    assert_eq!(reg["transport"], "TLS", "{reg}");
    // The demo account takes TLS too, and its users may still use UDP.
    let mut u = RawClient::udp(d.addr());
    assert_eq!(
        u.register("sip:pbx.test", "1001", "demo1001", 300).unwrap().status(),
        Some(200)
    );
}

#[test]
fn a_message_to_a_phone_registered_over_tls_goes_down_its_connection() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(certs.path(), "server");
    let (d, tls) = tls_daemon(&cert, &key);
    let mut phone = RawClient::tls(tls, &der);
    assert_eq!(
        phone
            .register("sip:pbx.test", "1004", "demo1004", 300)
            .unwrap()
            .status(),
        Some(200)
    );
    // 1003 sends over UDP (SIPp); the push to 1004 must come over TLS.
    let sent = std::thread::scope(|s| {
        let sender = s.spawn(|| crate::chat::send(&d, "1003", "1004", "over-tls"));
        let push = phone.recv().expect("MESSAGE pushed over the TLS connection");
        assert_eq!(push.method().map(|m| m.as_str().to_string()), Some("MESSAGE".into()));
        assert!(push
            .header(&switchboard::sip::HeaderName::Via)
            .unwrap()
            .starts_with("SIP/2.0/TLS "));
        assert!(push
            .header(&switchboard::sip::HeaderName::Contact)
            .is_none_or(|c| c.contains("transport=tls")));
        assert!(push.body.starts_with(b"over-tls"), "{:?}", push.body);
        let ok = switchboard::sip::response::response_to(&push, 200, None, "t1");
        phone.send_raw(&ok.to_bytes());
        sender.join().unwrap()
    });
    assert!(sent.contains("202"), "{sent}");
    d.wait_for_log("chat message delivered id=1 to=\"1004@pbx.test\"");
}

#[test]
fn sighup_gives_new_tls_connections_the_new_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, first) = certificate(certs.path(), "server");
    let (d, tls) = tls_daemon(&cert, &key);
    let mut old = RawClient::tls(tls, &first);
    assert_eq!(old.server_certificate(), first);
    // A broken pair is refused and the running certificate kept.
    std::fs::write(&key, "not a key").unwrap();
    d.signal("-HUP");
    d.wait_for_log("reload refused");
    assert_eq!(RawClient::tls(tls, &first).server_certificate(), first);
    // A new pair written over the files is used by new connections.
    let renewed = tempfile::tempdir().unwrap();
    let (new_cert, new_key, second) = certificate(renewed.path(), "renewed");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    d.signal("-HUP");
    d.wait_for_log("TLS certificate reloaded");
    assert_eq!(RawClient::tls(tls, &second).server_certificate(), second);
    // The connection opened before keeps working.
    let r = old.send_request("OPTIONS", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(200));
}

#[test]
fn baresip_phones_register_and_call_each_other_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(certs.path(), "server");
    let (d, tls) = tls_daemon(&cert, &key);
    let wav = tempfile::tempdir().unwrap();
    let tone = wav.path().join("tone.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-b",
        "16",
        tone.to_str().unwrap(),
        "synth",
        "4",
        "sine",
        "440",
        "vol",
        "0.5",
    ]);
    let silence = silence_wav(wav.path(), 3);
    // baresip checks the daemon's certificate against this CA file.
    let (server, ca) = (
        format!("{tls};transport=tls"),
        format!("sip_cafile {}\n", cert.display()),
    );
    let (callee, _) = start_baresip_via(&server, &ca, "1004", &silence, true, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    let dial = format!("/dial sip:1004@{server}");
    let (caller, _) = start_baresip_via(&server, &ca, "1003", &tone, false, &["-e", &dial]);
    d.wait_for_log("call answered");
    let regs = d.registrations();
    assert!(regs.iter().all(|r| r["transport"] == "TLS"), "{regs:?}");
    d.wait_for_log("call ended");
    drop(caller);
    let callee_dir = callee.stop();
    let recorded = received_audio(callee_dir.path());
    assert_eq!(recorded.len(), 1, "callee recorded what it received: {recorded:?}");
    let heard = rms(&sox(&[recorded[0].to_str().unwrap(), "-n", "stat"]));
    assert!(heard > 0.2, "the callee heard the tone (RMS {heard}), not silence");
    let r = crate::calls::records(&d);
    assert_eq!(r[0]["disposition"], "answered");
}

/// TLS connections count in the same per-IP budget as TCP ones, and one
/// that never starts its handshake is closed after the partial-message
/// timeout.
#[test]
fn tls_and_tcp_share_the_connection_caps_and_a_silent_handshake_is_closed() {
    use crate::robustness::closed_within;
    use std::time::Duration;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(certs.path(), "server");
    let (d, tls) = tls_daemon_with(
        &cert,
        &key,
        "tcp_partial_timeout_s = 1\ntcp_max_connections_per_ip = 2\n",
    );
    let mut over_tcp = RawClient::tcp(d.addr());
    let r = over_tcp.send_request("OPTIONS", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(200));
    // The second place goes to a TLS connection that never says hello.
    let mut silent = std::net::TcpStream::connect(tls).unwrap();
    // A third, TLS again, is over the shared cap: closed at once.
    let mut third = std::net::TcpStream::connect(tls).unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(5)), "over the cap");
    d.wait_for_log("connection refused: too many connections");
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)),
        "no handshake: closed"
    );
    // Its place is given back before this line is logged.
    d.saw_log("tls handshake timed out");
    // With the silent one gone, a TLS client gets in and is served.
    let mut c = RawClient::tls(tls, &der);
    let r = c.send_request("OPTIONS", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(200));
}
