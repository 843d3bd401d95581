//! Kamailio as a real SIP provider: it registers switchboard's trunk with
//! digest auth, proxy-authenticates its outbound INVITEs and relays them
//! to a SIPp "customer", and routes a DID call to the registered contact.
//! It record-routes and relays in-dialog requests only by their Route
//! headers (loose routing), as providers' proxies do.

use crate::harness::{free_port, Daemon, Sipp};
use std::process::{Child, Command, Stdio};

/// A Kamailio on 127.0.0.1:`port`; `switchboard` is the daemon's port
/// (calls from there are its outbound calls), `customer` the SIPp UAS.
struct Kamailio {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    fn start(port: u16, switchboard: u16, customer: u16) -> Kamailio {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "xlog.so"
modparam("usrloc", "db_mode", 0)

request_route {{
  if (is_method("REGISTER")) {{
    if (!pv_www_authenticate("prov.test", "s3cret", "0")) {{ www_challenge("prov.test", "0"); exit; }}
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
  }}
  if (has_totag()) {{
    if (loose_route()) {{ t_relay(); exit; }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("404", "Not here");
    exit;
  }}
  if (is_method("INVITE")) {{ record_route(); }}
  if (is_method("INVITE")) {{
    if ($si == "127.0.0.1" && $sp == {switchboard}) {{
      if (!pv_proxy_authenticate("prov.test", "s3cret", "0")) {{ proxy_challenge("prov.test", "0"); exit; }}
      consume_credentials();
      $du = "sip:127.0.0.1:{customer}";
      t_relay(); exit;
    }}
    # A DID: to the trunk's registered contact.
    $ru = "sip:acme@prov.test";
    if (!lookup("location")) {{ sl_send_reply("404", "Not registered"); exit; }}
    t_relay(); exit;
  }}
  t_relay();
}}
"#
        );
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&path)
            .args(["-DD", "-E", "-w"])
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kamailio installed (README test command installs it)");
        Kamailio { child, _dir: dir }
    }
}

impl Drop for Kamailio {
    /// SIGTERM: its main process stops the workers it forked.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn kamailio_registers_the_trunk_takes_an_outbound_call_and_delivers_a_did() {
    let (kport, customer) = (free_port(), free_port());
    let d = {
        // The daemon's port must be known to Kamailio first.
        let sections = "[[trunks]]\nname = \"prov\"\naddress = \"127.0.0.1:KPORT\"\nusername = \"acme\"\npassword = \"s3cret\"\nregister = true\nfrom_domain = \"prov.test\"\n"
            .replace("KPORT", &kport.to_string());
        let keys = "trunks = [\"prov\"]\ncaller_id = \"+34910000000\"\n[[accounts.dids]]\nnumber = \"+34910000001\"\nto = \"1004\"\n";
        Daemon::start_with_account(&sections, keys)
    };
    let _kamailio = Kamailio::start(kport, d.port, customer);
    d.saw_log("trunk registered trunk=prov");
    // Out: 1001 → Kamailio (407, answered) → the customer, who echoes audio.
    let mp = free_port().to_string();
    let customer_phone = Sipp::new("uas_answer_rr.xml", customer)
        .args(&["-mp", &mp, "-rtp_echo"])
        .spawn();
    let uac = crate::calls::caller(&d, "1001", "0611223344", 1000, "uac_call.xml");
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    let run = customer_phone.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    assert!(
        run.messages.contains("INVITE sip:0611223344@127.0.0.1"),
        "the number reached the customer"
    );
    assert!(
        run.messages.contains("<sip:+34910000000@prov.test>;tag="),
        "with the account's caller ID"
    );
    let r = &crate::calls::records(&d)[0];
    assert_eq!(r["disposition"], "answered");
    assert!(
        r["rtp_from_caller"].as_u64().unwrap() > 10 && r["rtp_from_callee"].as_u64().unwrap() > 10,
        "audio both ways through the relay: {r}"
    );
    // In: a customer calls the DID at Kamailio, which sends it to our contact.
    let agent = crate::calls::callee(&d, "1004", "uas_answer.xml", &[]);
    let mp = free_port().to_string();
    let inbound = Sipp::new("provider_call.xml", free_port())
        .target(&format!("127.0.0.1:{kport}"))
        .args(&["-s", "+34910000001", "-d", "500", "-mp", &mp])
        .file("audio.al", &crate::calls::tone_alaw(1))
        .run();
    assert_eq!(inbound.code, 0, "{}\n{}", inbound.errors, inbound.messages);
    assert_eq!(agent.wait().code, 0);
    let r = crate::calls::records(&d);
    let last = r.last().unwrap();
    assert_eq!(
        (
            last["caller"].as_str(),
            last["callee"].as_str(),
            last["disposition"].as_str()
        ),
        (Some("+34600111222"), Some("1004"), Some("answered"))
    );
}
