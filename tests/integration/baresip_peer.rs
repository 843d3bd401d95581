//! baresip, a real softphone, registers through digest auth and shows up
//! in `ctl registrations`.

use crate::harness::{free_port, Daemon};
use std::process::{Child, Command, Stdio};

struct Baresip {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_baresip(d: &Daemon, user: &str, password: &str) -> (Baresip, u16) {
    let dir = tempfile::tempdir().unwrap();
    // baresip also opens SIP/TLS on port+1: take an even port with a free neighbour.
    let port = loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            break p;
        }
    };
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
         module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
         module_tmp uuid.so\nmodule_tmp account.so\n"
    );
    std::fs::write(dir.path().join("config"), config).unwrap();
    std::fs::write(
        dir.path().join("accounts"),
        // An IP-address domain reaches the daemon's default account (pbx.test).
        format!("<sip:{user}@127.0.0.1:{}>;auth_pass={password};regint=300\n", d.port),
    )
    .unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip installed (README test command installs it)");
    (Baresip { child, _dir: dir }, port)
}

#[test]
fn baresip_registers_and_is_listed() {
    let d = Daemon::start("");
    let (phone, port) = start_baresip(&d, "1004", "demo1004");
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
