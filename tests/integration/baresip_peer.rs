//! baresip, a real softphone: it registers through digest auth and shows
//! up in `ctl registrations`; two of them call each other through the
//! B2BUA and the tone one plays is recorded, not silent, at the other.

use crate::harness::{free_port, Daemon};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Baresip {
    child: Child,
    dir: tempfile::TempDir,
}

impl Baresip {
    /// What baresip printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// SIGTERM lets baresip hang up and close its recordings.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts baresip as `user`; `source` is the WAV it sends in calls.
fn start_baresip(d: &Daemon, user: &str, source: &Path, answer: bool, args: &[&str]) -> (Baresip, u16) {
    let server = format!("127.0.0.1:{}", d.port);
    start_baresip_via(&server, "", user, source, answer, args)
}

/// Starts baresip as `user` of the daemon at `server` (`IP:PORT` with URI
/// parameters, e.g. `;transport=tls`); `config` adds lines to its config.
pub fn start_baresip_via(
    server: &str,
    config: &str,
    user: &str,
    source: &Path,
    answer: bool,
    args: &[&str],
) -> (Baresip, u16) {
    let dir = tempfile::tempdir().unwrap();
    // baresip also opens SIP/TLS on port+1: take a port with a free neighbour.
    let port = loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            break p;
        }
    };
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
         module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n\
         module sndfile.so\nmodule_tmp uuid.so\nmodule_tmp account.so\nmodule_app contact.so\nmodule_app menu.so\n\
         snd_path {}\naudio_player aubridge,sink{port}\naudio_source aufile,{}\n{config}",
        rec.display(),
        source.display()
    );
    std::fs::write(dir.path().join("config"), config).unwrap();
    // An IP-address domain reaches the daemon's default account (pbx.test).
    let answermode = if answer { ";answermode=auto" } else { "" };
    std::fs::write(
        dir.path().join("accounts"),
        format!("<sip:{user}@{server}>;auth_pass=demo{user};regint=300{answermode}\n"),
    )
    .unwrap();
    // The first contact is the current one: `/message TEXT` goes there.
    let contact = if user == "1003" { "1004" } else { "1003" };
    std::fs::write(
        dir.path().join("contacts"),
        format!("\"peer\" <sip:{contact}@{server}>\n"),
    )
    .unwrap();
    // What it prints ("Incoming call from: NAME URI") is kept in `stdout.log`.
    let log = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip installed (README test command installs it)");
    (Baresip { child, dir }, port)
}

/// Starts baresip as `user` of daemon `d` with its ctrl_tcp socket open
/// (for [`baresip_command`]) and waits for its registration; returns it
/// and the socket's port.
pub fn start_baresip_with_keys(d: &Daemon, user: &str, source: &Path, answer: bool) -> (Baresip, u16) {
    let ctrl = free_port();
    let server = format!("127.0.0.1:{}", d.port);
    let extra = format!("module ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n");
    let (phone, _) = start_baresip_via(&server, &extra, user, source, answer, &[]);
    d.wait_for_log(&format!("registered aor={user}@pbx.test"));
    (phone, ctrl)
}

/// Sends a command to a baresip's ctrl_tcp socket (netstring JSON) and
/// returns its answer.
pub fn baresip_command(port: u16, command: &str, params: &str) -> String {
    use std::io::{Read, Write};
    let json = format!("{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"t\"}}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("baresip ctrl_tcp");
    s.write_all(format!("{}:{json},", json.len()).as_bytes()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2000];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Presses `keys` on a baresip phone (RFC 4733), a quarter second apart.
pub fn press_keys(ctrl: u16, keys: &str) {
    for key in keys.chars() {
        let answer = baresip_command(ctrl, "sndcode", &key.to_string());
        assert!(answer.contains("\"ok\":true") || answer.contains("CALL_"), "{answer}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// RMS of `file` from `start` s for `len` s, and of the shipped music:
/// the first should be the second, give or take a factor of two.
pub fn music_levels(file: &str, start: &str, len: &str) -> (f64, f64) {
    let heard = rms(&sox(&[file, "-n", "trim", start, len, "stat"]));
    let original = rms(&sox(&[
        concat!(env!("CARGO_MANIFEST_DIR"), "/sounds/moh.wav"),
        "-n",
        "stat",
    ]));
    (heard, original)
}

/// The WAV files baresip's sndfile module wrote of what it received.
pub fn received_audio(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("rec"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .collect()
}

pub fn sox(args: &[&str]) -> String {
    let out = Command::new("sox")
        .args(args)
        .output()
        .expect("sox installed (README test command installs it)");
    assert!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An 8 kHz mono WAV of `seconds` of silence in `dir`.
pub fn silence_wav(dir: &Path, seconds: u32) -> std::path::PathBuf {
    let path = dir.join(format!("silence{seconds}.wav"));
    let (p, secs) = (path.to_str().unwrap().to_string(), seconds.to_string());
    sox(&["-n", "-r", "8000", "-c", "1", "-b", "16", &p, "trim", "0", &secs]);
    path
}

pub fn rms(stat: &str) -> f64 {
    stat.lines()
        .find(|l| l.starts_with("RMS     amplitude"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RMS in: {stat}"))
}

#[test]
fn baresip_registers_and_is_listed() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let silence = silence_wav(wav.path(), 1);
    let (phone, port) = start_baresip(&d, "1004", &silence, false, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    let regs = d.registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["aor"], "1004@pbx.test");
    assert!(
        regs[0]["contact"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{regs:?}"
    );
    assert!(
        regs[0]["user_agent"].as_str().unwrap_or("").contains("baresip"),
        "{regs:?}"
    );
    drop(phone);
}

#[test]
fn baresip_calls_baresip_and_the_tone_crosses_the_relay() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let tone = wav.path().join("tone.wav");
    let (t, rate) = (tone.to_str().unwrap(), "8000");
    sox(&[
        "-n", "-r", rate, "-c", "1", "-b", "16", t, "synth", "4", "sine", "440", "vol", "0.5",
    ]);
    let silence = silence_wav(wav.path(), 3);
    // The callee answers by itself and sends silence; its source ending after 3 s hangs up.
    let (callee, _) = start_baresip(&d, "1004", &silence, true, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    let dial = format!("/dial sip:1004@127.0.0.1:{}", d.port);
    let (caller, _) = start_baresip(&d, "1003", &tone, false, &["-e", &dial]);
    d.wait_for_log("call answered");
    d.wait_for_log("call ended");
    let caller_dir = caller.stop();
    let callee_dir = callee.stop();
    let recorded = received_audio(callee_dir.path());
    assert_eq!(recorded.len(), 1, "callee recorded what it received: {recorded:?}");
    let heard = rms(&sox(&[recorded[0].to_str().unwrap(), "-n", "stat"]));
    assert!(heard > 0.2, "the callee heard the tone (RMS {heard}), not silence");
    // And the caller heard the callee's silence: the recording exists but is quiet.
    let back = received_audio(caller_dir.path());
    assert_eq!(back.len(), 1);
    assert!(rms(&sox(&[back[0].to_str().unwrap(), "-n", "stat"])) < 0.01);
    let r = crate::calls::records(&d);
    assert_eq!(
        (
            r[0]["caller"].as_str(),
            r[0]["callee"].as_str(),
            r[0]["disposition"].as_str()
        ),
        (Some("1003"), Some("1004"), Some("answered"))
    );
}

#[test]
fn baresip_sends_a_chat_message_to_baresip() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let silence = silence_wav(wav.path(), 1);
    let (receiver, _) = start_baresip(&d, "1004", &silence, false, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    let (sender, _) = start_baresip(&d, "1003", &silence, false, &["-e", "/message hello-from-baresip"]);
    d.wait_for_log("chat message stored id=1 from=1003 to=1004");
    // baresip 1.0 answers a MESSAGE with 200 once it has taken it.
    d.wait_for_log("chat message delivered id=1 to=\"1004@pbx.test\"");
    let out = d.ctl(&["chat", "history", "1004", "1003"]);
    let hist: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hist[0]["body"], "hello-from-baresip");
    drop(sender);
    drop(receiver);
}

#[test]
fn a_party_put_on_hold_hears_music_then_the_caller_again() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let silence = silence_wav(wav.path(), 20);
    let (callee, _) = start_baresip(&d, "1004", &silence, true, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    // The caller streams a 440 Hz tone, holds for 2 s, resumes, hangs up.
    let mp = free_port().to_string();
    let run = crate::harness::Sipp::new("uac_hold_music.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", "1004", "-au", "1001", "-ap", "demo1001", "-key", "caller", "1001", "-mp", &mp,
        ])
        .file("audio.al", &crate::calls::tone_alaw(10))
        .run();
    assert_eq!(run.code, 0, "{}", run.errors);
    d.wait_for_log("call ended");
    let dir = callee.stop();
    let recorded = received_audio(dir.path());
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let file = recorded[0].to_str().unwrap();
    let band = |start: &str| rms(&sox(&[file, "-n", "trim", start, "0.8", "sinc", "420-460", "stat"]));
    let (before, held, after) = (band("0.4"), band("2.3"), band("4.0"));
    assert!(
        before > 0.05 && after > 0.05,
        "the tone before ({before}) and after ({after}) the hold"
    );
    assert!(held < before * 0.3, "no tone while held ({held} vs {before})");
    let (music, original) = music_levels(file, "2.0", "1.2");
    assert!(
        music > original * 0.5 && music < original * 2.0,
        "the held party heard the music (RMS {music}, the file's {original})"
    );
}
