//! The daemon under attack keeps serving: RFC 4475-style torture
//! messages, a PROTOS-style run of malformed INVITEs, SIPVicious scans
//! (svmap, svwar, svcrack), and a registration flood from one address
//! while phones at another register and call.

use crate::calls::{callee, caller};
use crate::harness::{free_port, sipp_register, Daemon};
use crate::raw_client::RawClient;
use std::process::Command;
use std::time::Duration;

/// The daemon still answers: OPTIONS from a fresh client, and a SIPp
/// registration with digest auth.
fn still_serving(d: &Daemon) {
    let mut c = RawClient::udp(d.addr());
    let r = c
        .send_request("OPTIONS", "sip:pbx.test", "1001", "")
        .expect("OPTIONS answered");
    assert_eq!(r.status(), Some(200));
    let run = sipp_register(d, "1002", "demo1002", 60, free_port(), &[]);
    assert_eq!(run.code, 0, "{}", run.errors);
}

const VALID_INVITE: &str = "INVITE sip:1002@pbx.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKtorture\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@pbx.test>;tag=t1\r\n\
To: <sip:1002@pbx.test>\r\n\
Call-ID: torture@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:1001@127.0.0.1:5099>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 68\r\n\
\r\n\
v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";

/// Messages in the spirit of RFC 4475 §3.1.2 (invalid) and §3.1.1
/// (valid but odd): each must get an answer or be dropped, never stop the
/// daemon.
fn torture_messages() -> Vec<Vec<u8>> {
    let v = VALID_INVITE;
    let mut out: Vec<Vec<u8>> = vec![
        // badinv01: no Via at all, two Content-Lengths, broken CSeq.
        v.replace("Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKtorture\r\n", "").into(),
        v.replace("Content-Length: 68", "Content-Length: 68\r\nContent-Length: 9999").into(),
        v.replace("CSeq: 1 INVITE", "CSeq: -1 INVITE").into(),
        v.replace("CSeq: 1 INVITE", "CSeq: 1 REGISTER").into(),
        // clerr, scalar02: Content-Length larger than the body, or huge.
        v.replace("Content-Length: 68", "Content-Length: 9999").into(),
        v.replace("Content-Length: 68", "Content-Length: 99999999999999999999").into(),
        // quotbal, baddn: unbalanced quotes in a display name.
        v.replace("From: <sip:1001", "From: \"Bob <sip:1001").into(),
        // ltgtruri, lwsruri: <> or spaces around the Request-URI.
        v.replace("INVITE sip:1002@pbx.test", "INVITE <sip:1002@pbx.test>").into(),
        v.replace("INVITE sip:1002@pbx.test", "INVITE  sip:1002@pbx.test ").into(),
        // badvers, bigcode: unknown SIP version, a response code of 4 digits.
        v.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia").into(),
        b"SIP/2.0 4294967301 better not break the receiver\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nContent-Length: 0\r\n\r\n".to_vec(),
        // escnull: a NUL in a header value; non-UTF-8 head.
        v.replace("tag=t1", "tag=t\u{0}1").into(),
        [&b"INVITE sip:\xff\xfe@pbx.test SIP/2.0\r\n"[..], &v.as_bytes()[27..]].concat(),
        // wsinv-style valid oddities: folded lines, compact names, spacing.
        v.replace("Max-Forwards: 70\r\n", "Max-Forwards:\r\n  70\r\n")
            .replace("Call-ID:", "i  :")
            .into(),
        // mismatch01: CSeq method differs from the request method.
        v.replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS").into(),
        // A request with no blank line at all, and garbage.
        v.replace("\r\n\r\nv=0", "\r\nv=0").into(),
        b"\r\n\r\n\r\n".to_vec(),
        vec![0u8; 1500],
    ];
    // longreq: very long header values.
    out.push(v.replace("tag=t1", &format!("tag={}", "a".repeat(20_000))).into());
    out
}

/// PROTOS-style: every header value of a valid INVITE replaced in turn by
/// overflows, format strings, NULs, odd characters and empty values; and
/// byte flips at seeded positions.
fn malformed_invites() -> Vec<Vec<u8>> {
    let payloads = [
        "A".repeat(60_000),
        "A".repeat(1024),
        "%s%s%s%n%n%n%x%x%x".to_string(),
        "\0".to_string(),
        "<>\"';,:@%00%ff".to_string(),
        String::new(),
        "-1".to_string(),
        "18446744073709551616".to_string(),
        "sip:".to_string(),
        "\u{7f}\u{1b}[2J".to_string(),
    ];
    let lines: Vec<&str> = VALID_INVITE.split("\r\n").collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().take(10) {
        let name_end = line.find(':').map_or(line.len().min(6), |c| c + 1);
        for p in &payloads {
            let mut m = lines.clone();
            let bad = format!("{}{p}", &line[..name_end]);
            m[i] = &bad;
            out.push(m.join("\r\n").into_bytes());
        }
    }
    // Seeded byte flips (xorshift), bounded.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..500 {
        let mut m = VALID_INVITE.as_bytes().to_vec();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x as usize) % m.len();
            m[at] = (x >> 32) as u8;
        }
        out.push(m);
    }
    out
}

#[test]
fn torture_and_malformed_invites_leave_the_daemon_serving() {
    let d = Daemon::start("");
    let mut udp = RawClient::udp(d.addr());
    udp.set_timeout(Duration::from_millis(1));
    let messages: Vec<Vec<u8>> = torture_messages().into_iter().chain(malformed_invites()).collect();
    assert!(messages.len() > 600);
    for m in &messages {
        udp.send_raw(m);
        while udp.recv().is_some() {}
    }
    // The same over TCP, one connection per message (framing may be lost).
    for m in torture_messages() {
        let mut tcp = RawClient::tcp(d.addr());
        tcp.set_timeout(Duration::from_millis(200));
        tcp.send_raw(&m);
        let _ = tcp.recv();
    }
    still_serving(&d);
}

/// Runs a SIPVicious tool; its output.
fn sipvicious(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} installed (README test command installs sipvicious): {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn sipvicious_scans_learn_nothing_and_the_daemon_keeps_serving() {
    // Scanners come from 127.0.0.1; the phones below register from there too,
    // so the scanner pattern is not banned here (a ban would silence them).
    let d = Daemon::start("ban_after_usernames = 1000\nban_after_failures = 100000\nmax_auth_failures = 6\n");
    let port = d.port.to_string();
    let map = sipvicious("svmap", &["-p", &port, "127.0.0.1"]);
    assert!(map.contains("127.0.0.1"), "svmap sees the server: {map}");
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let local = free_port().to_string();
        let war = sipvicious(
            "svwar",
            &[
                "--force",
                "-m",
                method,
                "-e",
                "1000-1010",
                "-p",
                &port,
                "-P",
                &local,
                "127.0.0.1",
            ],
        );
        assert!(war.contains("found nothing"), "{method} scan found extensions:\n{war}");
        // 1001 exists, 1009 does not: svwar must not tell them apart.
        let lists = |ext: &str| war.lines().any(|l| l.split('|').any(|c| c.trim() == ext));
        assert_eq!(
            lists("1001"),
            lists("1009"),
            "{method} scan told a user from a non-user:\n{war}"
        );
    }
    let words = std::env::temp_dir().join(format!("svcrack-{}.txt", d.port));
    let mut list: Vec<String> = (0..30).map(|i| format!("guess{i}")).collect();
    list.push("demo1001".into());
    std::fs::write(&words, list.join("\n")).unwrap();
    let crack = sipvicious(
        "svcrack",
        &[
            "-u",
            "1001",
            "-e",
            "1001",
            "-d",
            words.to_str().unwrap(),
            "-p",
            &port,
            "127.0.0.1",
        ],
    );
    assert!(!crack.contains("demo1001"), "svcrack found the password:\n{crack}");
    // 1001 is locked out from here; everyone else is served.
    still_serving(&d);
}

#[test]
fn a_registration_flood_from_one_address_does_not_stop_another() {
    let d = Daemon::start("");
    let done = std::sync::atomic::AtomicBool::new(false);
    let flood = std::thread::scope(|s| {
        // As fast as one socket sends, until the call below is over (at most
        // 300,000 requests); answers are not read (the kernel drops them).
        let flooder = s.spawn(|| {
            let c = RawClient::udp_from(d.addr(), "127.0.0.2:0");
            let mut sent = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && sent < 300_000 {
                let user = format!("{}", 1000 + sent % 50);
                let r = c.request_text(
                    "REGISTER",
                    "sip:pbx.test",
                    &user,
                    "Contact: <sip:x@127.0.0.2:9>\r\n",
                    sent,
                );
                c.send_to_server(r.as_bytes());
                sent += 1;
            }
            sent
        });
        // Meanwhile, from 127.0.0.1: a phone registers and a call goes through.
        let uas = callee(&d, "1002", "uas_answer.xml", &[]);
        let uac = caller(&d, "1001", "1002", 200, "uac_call.xml");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let answered = (uac.code, uac.errors.clone());
        drop(uas);
        let sent = flooder.join().unwrap();
        assert!(sent > 1000, "a flood: {sent} requests");
        answered
    });
    assert_eq!(flood.0, 0, "the call during the flood: {}", flood.1);
    still_serving(&d);
}
