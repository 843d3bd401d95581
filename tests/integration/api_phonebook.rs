//! The desk-phone phonebook: curl (an HTTP digest client of its own, like
//! a phone's) reads `/phonebook.xml` with a user's SIP credentials; no
//! credentials get a digest challenge, wrong ones 403.

use crate::api::Api;
use std::process::Command;

/// `curl` GET of `path` with `user:password` (digest) if given: (status, body).
fn curl(api: &Api, path: &str, credentials: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", &format!("{}{path}", api.base)]);
    if let Some(c) = credentials {
        cmd.args(["--digest", "-u", c]);
    }
    let out = cmd.output().expect("curl installed (README test command installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[test]
fn a_desk_phone_reads_the_phonebook_with_its_sip_credentials() {
    let api = Api::start();
    let (status, body) = curl(&api, "/phonebook.xml", Some("1004:demo1004"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("<?xml") && body.contains("<YealinkIPPhoneDirectory>"),
        "{body}"
    );
    for number in ["1001", "1004", "2001"] {
        assert!(
            body.contains(&format!("<Telephone>{number}</Telephone>")),
            "{number}: {body}"
        );
    }
    let (status, body) = curl(&api, "/phonebook.xml?format=cisco", Some("1001:demo1001"));
    assert_eq!(status, 200);
    assert!(
        body.contains("<CiscoIPPhoneDirectory>") && body.contains("<Title>"),
        "{body}"
    );
    assert_eq!(curl(&api, "/phonebook.xml", Some("1004:wrong")).0, 403);
    assert_eq!(
        curl(&api, "/phonebook.xml", Some("9999:demo1004")).0,
        403,
        "an unknown user looks the same"
    );
    assert_eq!(curl(&api, "/phonebook.xml?format=snom", Some("1004:demo1004")).0, 422);
    let r = api.http.get(format!("{}/phonebook.xml", api.base)).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers().get("www-authenticate").unwrap().to_str().unwrap();
    assert!(
        challenge.starts_with("Digest realm=\"pbx.test\"") && challenge.contains("qop=\"auth\""),
        "{challenge}"
    );
}
