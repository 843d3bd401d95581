//! Config validation: every error names file:line:col and the reason;
//! the shipped example parses.

use super::*;

fn errors(text: &str) -> Vec<String> {
    Config::parse(Path::new("t.toml"), text)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const ACCOUNT: &str = "[[accounts]]\ndomain = \"pbx.test\"\n";

#[test]
fn shipped_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/switchboard.toml");
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.listen, vec!["127.0.0.1:5060".parse().unwrap()]);
    assert!(cfg.udp && cfg.tcp);
    let acct = cfg.account_for_host("127.0.0.1").unwrap();
    let roles: Vec<Role> = ["1001", "1002", "1003", "1004"]
        .iter()
        .map(|e| acct.user(e).unwrap().role)
        .collect();
    assert_eq!(roles, vec![Role::Owner, Role::Admin, Role::Supervisor, Role::Agent]);
    assert_eq!(cfg.data_dir, PathBuf::from("./data"));
    let q = acct.queue("3001").unwrap();
    assert_eq!(
        (q.members.len(), q.strategy),
        (3, crate::config::QueueStrategy::LongestIdle)
    );
    assert_eq!(q.acw_limit, Some(std::time::Duration::from_secs(10)));
    assert_eq!(
        acct.group("2001").unwrap().ring.strategy,
        crate::config::RingStrategy::Simultaneous
    );
}

#[test]
fn queues_and_ring_groups_are_checked_with_their_lines() {
    let users = "[[accounts.users]]\nextension = \"1001\"\npassword = \"x\"\n";
    let e = errors(&format!(
        "[server]\nlisten = [\"127.0.0.1:5060\"]\n{ACCOUNT}{users}\
         [[accounts.queues]]\nnumber = \"3001\"\nmembers = [\"1001\", {{ extension = \"1009\", tier = 2 }}]\n\
         strategy = \"fastest\"\noverflow = \"4444\"\nmoh = \"/nonexistent/moh.wav\"\nwhen_no_agents = \"cry\"\n\
         [[accounts.queues]]\nnumber = \"1001\"\n\
         [[accounts.groups]]\nnumber = \"2001\"\nstrategy = \"loud\"\nno_answer = 200\n"
    ));
    let expect = [
        "t.toml:10:20: queue \"3001\" names unknown extension \"1009\"",
        "t.toml:11:12: unknown queue strategy \"fastest\"",
        "t.toml:13:7: queue \"3001\" music: /nonexistent/moh.wav",
        "t.toml:14:18: when_no_agents \"cry\"",
        "t.toml:16:10: queue number \"1001\" is empty or already used",
        "t.toml:19:12: unknown group strategy \"loud\"",
        "t.toml:20:13: 200 is not a SIP error status",
        "t.toml:12:12: destination \"4444\" is no user, group, queue or remote extension",
    ];
    for x in expect {
        assert!(e.iter().any(|m| m.starts_with(x)), "{x} not in {e:#?}");
    }
}

#[test]
fn unknown_key_names_its_line() {
    let e = errors("[server]\nlisten = [\"127.0.0.1:5060\"]\nlistne = 1\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.toml:3:1: unknown field `listne`"), "{e:?}");
}

#[test]
fn bad_address_and_transport() {
    let e = errors("[server]\nlisten = [\"127.0.0.1:5060\", \"localhost\"]\ntransports = [\"udp\", \"sctp\"]\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:29: invalid listen address \"localhost\""),
        "{e:?}"
    );
    assert!(e[1].starts_with("t.toml:3:22: unknown transport \"sctp\""), "{e:?}");
}

#[test]
fn duplicate_extension_and_missing_password() {
    let text = format!(
        "{ACCOUNT}[[accounts.users]]\nextension = \"1001\"\npassword = \"x\"\n\
[[accounts.users]]\nextension = \"1001\"\npassword = \"y\"\n\
[[accounts.users]]\nextension = \"1002\"\n"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("t.toml:7:13: duplicate extension \"1001\""), "{e:?}");
    assert!(
        e[1].starts_with("t.toml:10:13: missing password for extension \"1002\""),
        "{e:?}"
    );
}

#[test]
fn bad_role_and_syntax_errors_have_positions() {
    let e = errors(&format!(
        "{ACCOUNT}[[accounts.users]]\nextension = \"1\"\npassword = \"p\"\nrole = \"boss\"\n"
    ));
    assert!(e[0].starts_with("t.toml:6:8: unknown variant `boss`"), "{e:?}");
    let e = errors("[server\nlisten = 1\n");
    assert!(e[0].starts_with("t.toml:1:"), "{e:?}");
}

#[test]
fn timers_and_expires_are_checked() {
    let e = errors("[sip]\nt1_ms = 0\n[registrar]\nmin_expires = 100\nmax_expires = 50\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].contains("t.toml:2:9: t1_ms must be greater than 0"), "{e:?}");
    assert!(
        e[1].contains("t.toml:5:15: max_expires must be at least min_expires"),
        "{e:?}"
    );
}

#[test]
fn accounts_by_domain_alias_and_ip() {
    let text =
        "[[accounts]]\ndomain = \"a.test\"\naliases = [\"pbx-a\"]\n[[accounts]]\ndomain = \"b.test\"\ndefault = true\n";
    let cfg = Config::parse(Path::new("t.toml"), text).unwrap();
    assert_eq!(cfg.account_for_host("A.TEST").unwrap().domain, "a.test");
    assert_eq!(cfg.account_for_host("pbx-a").unwrap().domain, "a.test");
    assert_eq!(cfg.account_for_host("192.0.2.1").unwrap().domain, "b.test");
    assert_eq!(cfg.account_for_host("[::1]").unwrap().domain, "b.test");
    assert!(cfg.account_for_host("other.test").is_none());
}

#[test]
fn tls_files_are_read_at_load_and_a_bad_one_names_its_line() {
    let e = errors(&format!(
        "[tls]\ncertificate = \"/nonexistent/cert.pem\"\nprivate_key = \"/nonexistent/key.pem\"\n{ACCOUNT}"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:15: /nonexistent/cert.pem: cannot read"),
        "{e:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, "garbage").unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:5060\", \"[::1]:5070\"]\n[tls]\ncertificate = {:?}\nprivate_key = {:?}\n{ACCOUNT}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let e = errors(&text);
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:5:15: ") && e[0].contains("no PEM block"),
        "{e:?}"
    );
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let cfg = Config::parse(Path::new("t.toml"), &text).unwrap();
    // TLS listens on each listen IP at the default port 5061.
    assert_eq!(
        cfg.local_addrs().tls,
        vec!["127.0.0.1:5061".parse().unwrap(), "[::1]:5061".parse().unwrap()]
    );
}

#[test]
fn the_apis_certificate_is_read_at_load_and_goes_with_a_key() {
    let e = errors(&format!("[api]\ncertificate = \"/nonexistent/api.pem\"\n{ACCOUNT}"));
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:2:15: ") && e[0].contains("go together"),
        "{e:?}"
    );
    let e = errors(&format!(
        "[api]\ncertificate = \"/nonexistent/api.pem\"\nprivate_key = \"/nonexistent/api.key\"\n{ACCOUNT}"
    ));
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:2:15: /nonexistent/api.pem: cannot read"),
        "{e:?}"
    );
    let cfg = Config::parse(
        Path::new("t.toml"),
        &format!("[api]\nlisten = \"127.0.0.1:9443\"\n{ACCOUNT}"),
    )
    .unwrap();
    assert_eq!(
        cfg.api,
        Some(ApiSettings {
            listen: "127.0.0.1:9443".parse().unwrap(),
            tls: None
        })
    );
}

#[test]
fn trunks_dids_and_remote_extensions_are_checked() {
    let text = "[[trunks]]\nname = \"main\"\naddress = \"127.0.0.1:5099\"\ntransport = \"sctp\"\n\
[[accounts]]\ndomain = \"pbx.test\"\ntrunks = [\"main\", \"nope\"]\n\
[[accounts.users]]\nextension = \"1001\"\npassword = \"x\"\n\
[[accounts.dids]]\nnumber = \"+3491\"\nto = \"9999\"\n\
[[accounts.remote_extensions]]\nnumber = \"1001\"\ntarget = \"sip:a@127.0.0.1\"\n\
[[accounts.remote_extensions]]\nnumber = \"2100\"\ntarget = \"not a target\"\n";
    let e = errors(text);
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:4:13: trunk transport \"sctp\": expected \"udp\", \"tcp\" or \"tls\""),
        "{e:?}"
    );
    assert!(e[1].contains("no trunk named \"nope\""), "{e:?}");
    assert!(e[2].contains("DID \"+3491\" goes to \"9999\""), "{e:?}");
    assert!(
        e[3].contains("remote extension \"1001\" is empty or its number is already used"),
        "{e:?}"
    );
    assert!(e[4].contains("is neither sip:user@host nor a number"), "{e:?}");
}

#[test]
fn a_number_format_needs_its_country_code() {
    let e = errors("[[trunks]]\nname = \"t\"\naddress = \"127.0.0.1\"\nnumber_format = \"e164\"\n[[accounts]]\ndomain = \"a.test\"\n");
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:4:17: number_format \"e164\" needs country_code"),
        "{e:?}"
    );
}

#[test]
fn a_trunk_host_without_a_port_is_looked_up_with_srv_by_the_daemon() {
    let text = "[dns]\nservers = [\"127.0.0.1:5353\"]\n\
                [[trunks]]\nname = \"a\"\naddress = \"sip.provider.example\"\n\
                [[trunks]]\nname = \"b\"\naddress = \"localhost:5099\"\n\
                [[accounts]]\ndomain = \"pbx.test\"\n";
    let cfg = Config::parse(Path::new("t.toml"), text).unwrap();
    assert_eq!(cfg.trunks[0].srv_name.as_deref(), Some("sip.provider.example"));
    assert!(cfg.trunks[0].address.ip().is_unspecified(), "found later, not at load");
    assert_eq!(
        (cfg.trunks[1].srv_name.as_deref(), cfg.trunks[1].address.port()),
        (None, 5099)
    );
    assert_eq!(cfg.dns_servers, vec!["127.0.0.1:5353".parse().unwrap()]);
    let e = errors("[dns]\nservers = [\"nope\"]\n[[accounts]]\ndomain = \"a.test\"\n");
    assert!(
        e.len() == 1 && e[0].starts_with("t.toml:2:12: dns server \"nope\""),
        "{e:?}"
    );
}
