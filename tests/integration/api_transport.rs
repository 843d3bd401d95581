//! How the API is reached: HTTPS with a configured certificate, HTTP/2
//! chosen by ALPN (or HTTP/1.1 when the client asks for it), and plain
//! HTTP/2 with prior knowledge without one. curl is the client (the test
//! command installs it): an HTTP/2 and TLS implementation of its own.

use crate::api::Api;
use crate::harness::{default_dialplan, free_port, Daemon};
use std::process::Command;

/// `curl ARGS URL` with a bearer token: (exit code, body, HTTP version).
fn curl(args: &[&str], url: &str, token: &str) -> (i32, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_version}",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl installed (README test command installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap_or(("", ""));
    (
        out.status.code().unwrap_or(-1),
        body.to_string(),
        version.trim().to_string(),
    )
}

#[test]
fn the_api_speaks_https_with_http2_and_plain_http2_with_prior_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = crate::tls::certificate(dir.path(), "api");
    let port = free_port();
    let d = Daemon::start_with(
        "",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        &default_dialplan(),
    );
    let out = d.ctl(&["token", "create", "1004", "tests"]);
    let token: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = token["token"].as_str().unwrap();
    let url = format!("https://127.0.0.1:{port}/api/v1/me");
    let ca = cert.to_str().unwrap();
    let (code, body, version) = curl(&["--cacert", ca], &url, token);
    assert_eq!((code, version.as_str()), (0, "2"), "{body}");
    assert!(body.contains("\"extension\":\"1004\""), "{body}");
    let (code, body, version) = curl(&["--cacert", ca, "--http1.1"], &url, token);
    assert_eq!((code, version.as_str()), (0, "1.1"), "{body}");
    // An untrusted client and plain HTTP get nothing.
    assert_ne!(
        curl(&[], &url, token).0,
        0,
        "the certificate is not in the system's trust store"
    );
    let (_, _, version) = curl(&[], &format!("http://127.0.0.1:{port}/api/v1/me"), token);
    assert_eq!(version, "0", "no plain HTTP on the HTTPS port");

    let plain = Api::start();
    let token = plain.token("1004");
    let (code, body, version) = curl(
        &["--http2-prior-knowledge"],
        &format!("{}/api/v1/me", plain.base),
        &token,
    );
    assert_eq!((code, version.as_str()), (0, "2"), "{body}");
}

#[test]
fn the_openapi_document_is_served_and_reads_as_openapi_3_1() {
    let api = Api::start();
    let r = api
        .http
        .get(format!("{}/api/v1/openapi.json", api.base))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "served without a token");
    let text = r.text().unwrap();
    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not an OpenAPI 3.1 document: {e}"));
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let paths = spec.paths.unwrap_or_default();
    for (path, methods) in [
        ("/api/v1/contacts/{id}", 3),
        ("/api/v1/calls", 2),
        ("/api/v1/history/{id}", 1),
        ("/api/v1/chat/{peer}", 2),
        ("/phonebook.xml", 1),
    ] {
        let item = paths.get(path).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(item.methods().into_iter().count(), methods, "{path}");
    }
    // Every documented GET without a path parameter answers (never the
    // router's "no such resource").
    let token = api.token("1001");
    for (path, item) in &paths {
        if path.contains('{') || item.get.is_none() || path.ends_with("/events") {
            continue;
        }
        let r = api
            .http
            .get(format!("{}{path}", api.base))
            .bearer_auth(&token)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        assert!(!body.contains("no such resource"), "{path}: {status} {body}");
    }
}
