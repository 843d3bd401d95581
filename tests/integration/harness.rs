//! Shared test harness: starts the real `switchboard` binary on loopback
//! with a temporary config and data dir on free ports, follows its log
//! (tests wait for log events, not for time), and drives real peers.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/integration/scenarios")
        .join(name)
}

/// A port free for both UDP and TCP on 127.0.0.1 and ::1, with the three
/// above it free on UDP (SIPp's media and RTCP ports, baresip's TLS port
/// sit there). Drawn at random from 10000-19999 (below the daemons' relay
/// range and the kernel's ephemeral range, where sockets bound to port 0
/// land) and never handed out twice in one run: tests run in parallel,
/// and a port found free can be taken by another test before it is bound.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = 10000 + (rand::random::<u32>() % 9996) as u16;
        let mut taken = HANDED_OUT.lock().unwrap();
        if taken.iter().any(|t| t.abs_diff(port) < 4) {
            continue;
        }
        let free = |p: u16| UdpSocket::bind(("127.0.0.1", p)).is_ok();
        let ok = (port..port + 4).all(free)
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok()
            && TcpListener::bind(("::1", port)).is_ok();
        if ok {
            taken.push(port);
            return port;
        }
    }
    panic!("no free port");
}

/// Demo users; 1001..1004 with passwords demo1001..demo1004.
pub const USERS: &str = r#"
[[accounts]]
domain = "pbx.test"
dialplan = "DIALPLAN"
chat = true
ACCOUNT_KEYS
[[accounts.users]]
extension = "1001"
name = "Olivia Owner"
password = "demo1001"
role = "owner"
outbound = true
[[accounts.users]]
extension = "1002"
password = "demo1002"
role = "admin"
[[accounts.users]]
extension = "1003"
password = "demo1003"
role = "supervisor"
[[accounts.users]]
extension = "1004"
name = "Andre Agent"
password = "demo1004"
role = "agent"
outbound = false
[[accounts.groups]]
number = "2001"
name = "Sales"
members = ["1002", "1004"]
supervisors = ["1003"]
[[accounts.groups]]
number = "2002"
name = "Support"
members = ["1001"]
"#;

/// Marks `sections` that are the demo account's tail (see
/// `start_with_demo_tail`).
const DEMO_TAIL_MARK: &str = "#demo-tail\n";

/// The shipped default dialplan.
pub fn default_dialplan() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans/default.lua")
}

pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_rx: Mutex<Receiver<String>>,
    log_tx: mpsc::Sender<String>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// Extra environment of the daemon process.
    env: Vec<(&'static str, &'static str)>,
}

impl Daemon {
    /// Starts a daemon; `security` is the body of its [security] table.
    pub fn start(security: &str) -> Daemon {
        Daemon::start_with(security, "", &default_dialplan())
    }

    /// Starts a daemon with extra top-level tables (`sections`, e.g.
    /// "[calls]\nring_timeout_s = 5\n") and the given dialplan file.
    pub fn start_with(security: &str, sections: &str, dialplan: &Path) -> Daemon {
        Daemon::start_with_env(security, sections, dialplan, Vec::new())
    }

    /// Like `start_with`, with extra environment variables for the daemon.
    pub fn start_with_env(
        security: &str,
        sections: &str,
        dialplan: &Path,
        env: Vec<(&'static str, &'static str)>,
    ) -> Daemon {
        Daemon::start_full(security, sections, "", dialplan, env)
    }

    /// Like `start_with`, with `account_keys` (e.g. `trunks = ["main"]`)
    /// added to the demo account's table.
    pub fn start_with_account(sections: &str, account_keys: &str) -> Daemon {
        Daemon::start_full("", sections, account_keys, &default_dialplan(), Vec::new())
    }

    /// Starts a daemon whose demo account also has `demo_tail` (users,
    /// queues, groups: `[[accounts.queues]]` … tables) after its own.
    pub fn start_with_demo_tail(demo_tail: &str) -> Daemon {
        Daemon::start_full(
            "",
            &format!("{DEMO_TAIL_MARK}{demo_tail}"),
            "",
            &default_dialplan(),
            Vec::new(),
        )
    }

    fn start_full(
        security: &str,
        sections: &str,
        account_keys: &str,
        dialplan: &Path,
        env: Vec<(&'static str, &'static str)>,
    ) -> Daemon {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("switchboard.toml");
        // Accounts in `sections` come after the demo account, which stays
        // the default one.
        let (sections, demo_tail) = match sections.strip_prefix(DEMO_TAIL_MARK) {
            Some(tail) => ("", tail),
            None => (sections, ""),
        };
        let (sections, accounts) = sections.split_at(sections.find("[[accounts]]").unwrap_or(sections.len()));
        let config =
            format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]\ndata_dir = \"{}\"\nstore_cache_kb = 1024\n\
             {}[log]\nlevel = \"info,switchboard=debug\"\n\
             [security]\n{security}\n{sections}\n{}\n{demo_tail}\n{accounts}",
            dir.path().join("data").display(),
            if sections.contains("[sip]") { "" } else { "[sip]\ntcp_partial_timeout_s = 30\n" },
            USERS
                .replace("DIALPLAN", &dialplan.display().to_string())
                .replace("ACCOUNT_KEYS", account_keys)
        );
        std::fs::write(&config_path, config).unwrap();
        let (log_tx, log_rx) = mpsc::channel();
        let mut d = Daemon {
            child: None,
            port,
            _dir: dir,
            config_path,
            log_rx: Mutex::new(log_rx),
            log_tx,
            log: Arc::default(),
            env,
        };
        d.spawn();
        d
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .env("MALLOC_ARENA_MAX", "2")
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchboard");
        let stderr = child.stderr.take().unwrap();
        let tx = self.log_tx.clone();
        let all = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        self.wait_for_log("switchboard ready");
    }

    /// A log line containing `needle` logged at any time since the start
    /// (even before "switchboard ready": a trunk registers at once), or
    /// the next one, waited for as [`Daemon::wait_for_log`] does.
    pub fn saw_log(&self, needle: &str) -> String {
        if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        self.wait_for_log(needle)
    }

    /// Waits (up to 20 s) for a log line containing `needle`, consuming
    /// lines up to it; returns the line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log_rx.lock().unwrap().recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no log line containing {needle:?}; log so far:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let status = c.wait().unwrap();
            assert!(status.success(), "daemon exited with {status}");
        }
    }

    /// Sends one command line to the control socket directly (for commands
    /// the `ctl` client does not offer, like fault injection); returns the reply line.
    pub fn control(&self, command: &str) -> String {
        use std::io::{BufRead, Write};
        let socket = self.config_path.parent().unwrap().join("data/control.sock");
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let line = serde_json::json!({ "command": command }).to_string();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        let _ = std::io::BufReader::new(&s).read_line(&mut reply);
        reply
    }

    /// Waits (up to 20 s) for the daemon to exit by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait().unwrap());
        });
        rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("the daemon did not exit")
        })
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("-c")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap()
    }

    /// Registrations as JSON objects from `switchboard ctl registrations --json`.
    pub fn registrations(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["--json", "registrations"]);
        assert!(
            out.status.success(),
            "ctl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }

    pub fn registered_contacts(&self, aor: &str) -> Vec<String> {
        self.registrations()
            .into_iter()
            .filter(|r| r["aor"] == aor)
            .map(|r| r["contact"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Result of one SIPp run.
pub struct SippRun {
    pub code: i32,
    pub errors: String,
    pub logs: String,
    pub messages: String,
}

/// Runs a SIPp scenario against the daemon: one call, bounded in time,
/// control socket on loopback. Returns its exit code and error/log files.
pub fn sipp(target: &str, scenario_name: &str, local_port: u16, args: &[&str]) -> SippRun {
    Sipp::new(scenario_name, local_port).target(target).args(args).run()
}

/// A SIPp run being prepared: its own working directory (for traces and
/// media files) and arguments.
pub struct Sipp {
    work: tempfile::TempDir,
    cmd: Command,
}

/// A SIPp running in the background (a UAS waiting for a call).
pub struct SippChild {
    work: tempfile::TempDir,
    child: Child,
}

impl Sipp {
    pub fn new(scenario_name: &str, local_port: u16) -> Sipp {
        let work = tempfile::tempdir().unwrap();
        let cp = free_port().to_string();
        let mut cmd = Command::new("sipp");
        cmd.current_dir(work.path())
            .arg("-sf")
            .arg(scenario(scenario_name))
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &local_port.to_string(),
                "-ci",
                "127.0.0.1",
                "-cp",
                &cp,
            ])
            .args([
                "-m",
                "1",
                "-timeout",
                "30s",
                "-timeout_error",
                "-recv_timeout",
                "20000",
                "-nostdin",
            ])
            .args(["-trace_err", "-trace_logs", "-trace_msg"])
            // Message traces carry wall-clock times: in UTC, whatever the machine's zone.
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Sipp { work, cmd }
    }

    pub fn target(mut self, target: &str) -> Sipp {
        self.cmd.arg(target);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Sipp {
        self.cmd.args(args);
        self
    }

    /// Puts a file in SIPp's working directory (e.g. audio for rtp_stream).
    pub fn file(self, name: &str, data: &[u8]) -> Sipp {
        std::fs::write(self.work.path().join(name), data).unwrap();
        self
    }

    pub fn run(self) -> SippRun {
        self.spawn().wait()
    }

    pub fn spawn(mut self) -> SippChild {
        let child = self
            .cmd
            .spawn()
            .expect("sipp installed (README test command installs sip-tester)");
        SippChild { work: self.work, child }
    }
}

impl SippChild {
    pub fn wait(mut self) -> SippRun {
        let status = self.child.wait().unwrap();
        let read = |suffix: &str| {
            std::fs::read_dir(self.work.path())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<String>()
        };
        SippRun {
            code: status.code().unwrap_or(-1),
            errors: read("_errors.log"),
            logs: read("_logs.log"),
            messages: read("_messages.log"),
        }
    }
}

impl Drop for SippChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers `user` with SIPp (digest MD5) for `expires` seconds.
pub fn sipp_register(d: &Daemon, user: &str, password: &str, expires: u32, local_port: u16, extra: &[&str]) -> SippRun {
    let exp = expires.to_string();
    let mut args = vec!["-s", user, "-au", user, "-ap", password, "-key", "expires", &exp];
    args.extend_from_slice(extra);
    sipp(&d.target(), "register.xml", local_port, &args)
}
