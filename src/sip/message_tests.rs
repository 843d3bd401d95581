//! Parser tests written from the descriptions of RFC 4475 (SIP torture
//! tests) and RFC 3261 §7/§25, plus a property test that arbitrary bytes
//! never panic the parser.

use super::addr::{NameAddr, Via};
use super::header::HeaderName;
use super::message::{frame_len, ParseError, SipMessage};
use super::method::Method;
use super::uri::SipUri;
use bytes::Bytes;

fn parse(s: &str) -> Result<SipMessage, ParseError> {
    SipMessage::parse_datagram(Bytes::copy_from_slice(s.as_bytes()))
}

const BASIC: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@example.com>;tag=a1\r\n\
To: <sip:1001@example.com>\r\n\
Call-ID: c1@192.0.2.1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:1001@192.0.2.1:5060>\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn basic_register() {
    let m = parse(BASIC).unwrap();
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.request_uri(), Some("sip:example.com"));
    assert_eq!(m.call_id(), Some("c1@192.0.2.1"));
    assert_eq!(m.body.len(), 0);
}

#[test]
fn compact_forms_and_odd_spacing() {
    // RFC 4475 §3.1.1.1 (wsinv) style: compact names, "TO :" spacing, odd case.
    let msg = "OPTIONS sip:user@example.com SIP/2.0\r\n\
TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n\
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n\
MaX-fOrWaRdS: 0068\r\n\
Call-ID  : wsinv.ndaksdj@192.0.2.1\r\n\
cseq: 0009\r\n  OPTIONS\r\n\
v:  SIP  /   2.0  /  UDP  192.0.2.2;branch=z9hG4bKkdjuw\r\n\
i: ignored-second-callid\r\n\
l: 0\r\n\r\n";
    let m = parse(msg).unwrap();
    assert_eq!(m.call_id(), Some("wsinv.ndaksdj@192.0.2.1"));
    let to = m.header(&HeaderName::To).unwrap();
    assert_eq!(
        NameAddr::parse(to).unwrap().uri_text,
        "sip:vivekg@chair-dnrc.example.com"
    );
    let from = m.header(&HeaderName::From).unwrap();
    assert_eq!(NameAddr::parse(from).unwrap().tag(), Some("98asjd8"));
    let cseq = super::addr::CSeq::parse(m.header(&HeaderName::CSeq).unwrap()).unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Options));
    let via = Via::parse(m.top_via().unwrap()).unwrap();
    assert_eq!(via.host, "192.0.2.2");
    assert_eq!(via.branch(), Some("z9hG4bKkdjuw"));
}

#[test]
fn comma_joined_vias_are_all_kept() {
    let msg = BASIC.replace(
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc, SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKx;received=2001:db8::9\r\nv: SIP/2.0/UDP third.example\r\n",
    );
    let m = parse(&msg).unwrap();
    let vias: Vec<_> = m.header_values(&HeaderName::Via).collect();
    assert_eq!(vias.len(), 3);
    let second = Via::parse(vias[1]).unwrap();
    assert_eq!(second.param("received"), Some("2001:db8::9"));
    assert_eq!(second.host, "2001:db8::9");
}

#[test]
fn escaped_and_ipv6_request_uris() {
    let m = parse(&BASIC.replace(
        "REGISTER sip:example.com",
        "REGISTER sip:%31001@[2001:db8::10]:5070;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    ))
    .unwrap();
    let uri = SipUri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(uri.user_unescaped().unwrap(), "1001");
    assert_eq!(uri.host, "2001:db8::10");
    assert_eq!(uri.param("gr"), Some("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"));
}

#[test]
fn unknown_method_is_an_extension() {
    let m = parse(&BASIC.replace("REGISTER sip:", "NEWMETHOD sip:")).unwrap();
    assert_eq!(m.method(), Some(&Method::Extension(Bytes::from_static(b"NEWMETHOD"))));
}

#[test]
fn bad_content_lengths() {
    assert_eq!(
        parse(&BASIC.replace("Content-Length: 0", "Content-Length: -5")),
        Err(ParseError::ContentLength)
    );
    assert_eq!(
        parse(&BASIC.replace("Content-Length: 0", "Content-Length: 9999")),
        Err(ParseError::Truncated)
    );
    assert_eq!(
        parse(&BASIC.replace("Content-Length: 0", "Content-Length: 99999999999999999999")),
        Err(ParseError::ContentLength)
    );
    // Surplus bytes beyond Content-Length in a datagram are discarded (§18.3).
    let m = parse(&format!("{BASIC}extra")).unwrap();
    assert!(m.body.is_empty());
}

#[test]
fn malformed_start_lines() {
    assert_eq!(
        parse(&BASIC.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")),
        Err(ParseError::Version)
    );
    assert_eq!(
        parse(&BASIC.replace("REGISTER sip:example.com", "REGISTER  sip:example.com")),
        Err(ParseError::StartLine)
    );
    assert_eq!(
        parse(&BASIC.replace("REGISTER sip:example.com", "REGISTER example")),
        Err(ParseError::StartLine)
    );
    assert_eq!(parse("\r\n\r\n"), Err(ParseError::Empty));
    assert_eq!(
        parse("REGISTER sip:x SIP/2.0\r\nVia: x\r\n"),
        Err(ParseError::Incomplete)
    );
    assert!(matches!(
        parse("REGISTER sip:x SIP/2.0\r\nno colon here\r\n\r\n"),
        Err(ParseError::HeaderLine(2))
    ));
}

#[test]
fn a_head_that_is_not_utf8_is_refused_and_answered_400() {
    // Latin-1 "é" (0xE9) in a display name: not UTF-8 (RFC 3261 §7.3.1).
    let bad: Vec<u8> = BASIC
        .replace("From: ", "From: \"Jos\x01\" ")
        .bytes()
        .map(|b| if b == 1 { 0xe9 } else { b })
        .collect();
    let err = SipMessage::parse_datagram(Bytes::from(bad.clone())).unwrap_err();
    assert_eq!(err, ParseError::NotText);
    let resp = crate::sip::transport::salvage_bad_request(&bad, &err).expect("dialog headers are readable");
    let resp = SipMessage::parse_datagram(resp).unwrap();
    assert_eq!(resp.status(), Some(400));
    assert_eq!(resp.reason(), "Bad Request (message head is not UTF-8)");
    // The same text in UTF-8 is read as is.
    let good = BASIC.replace("From: ", "From: \"Jos\u{e9}\" ");
    let m = SipMessage::parse_datagram(Bytes::from(good)).unwrap();
    assert!(m.header(&HeaderName::From).unwrap().starts_with("\"Jos\u{e9}\""));
}

#[test]
fn binary_body_is_byte_exact() {
    let head = BASIC.replace(
        "Content-Length: 0",
        "Content-Type: application/octet-stream\r\nContent-Length: 6",
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&[0, 0xff, 0xfe, b'\r', b'\n', 0x80]);
    let m = SipMessage::parse_datagram(Bytes::from(raw)).unwrap();
    assert_eq!(&m.body[..], &[0, 0xff, 0xfe, b'\r', b'\n', 0x80]);
    let again = SipMessage::parse_datagram(m.to_bytes()).unwrap();
    assert_eq!(again.body, m.body);
}

#[test]
fn two_messages_in_one_stream_read() {
    let two = format!("\r\n\r\n{BASIC}{}", BASIC.replace("c1@", "c2@"));
    let buf = two.as_bytes();
    let (skip, len) = frame_len(buf, 65535).unwrap();
    assert_eq!(skip, 4);
    let len = len.unwrap();
    let first = SipMessage::parse_framed(Bytes::copy_from_slice(&buf[skip..skip + len])).unwrap();
    assert_eq!(first.call_id(), Some("c1@192.0.2.1"));
    let rest = &buf[skip + len..];
    let (skip2, len2) = frame_len(rest, 65535).unwrap();
    let second = SipMessage::parse_framed(Bytes::copy_from_slice(&rest[skip2..skip2 + len2.unwrap()])).unwrap();
    assert_eq!(second.call_id(), Some("c2@192.0.2.1"));
    // A half message is not yet a frame.
    assert_eq!(frame_len(&buf[4..30], 65535).unwrap(), (0, None));
    // Oversized declared length is refused before buffering it.
    let big = BASIC.replace("Content-Length: 0", "Content-Length: 70000");
    assert_eq!(frame_len(big.as_bytes(), 65535), Err(ParseError::TooLarge(65535)));
}

#[test]
fn serialization_round_trip() {
    let m = parse(BASIC).unwrap();
    let again = SipMessage::parse_datagram(m.to_bytes()).unwrap();
    assert_eq!(m, again);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = SipMessage::parse_datagram(Bytes::from(data.clone()));
        let _ = frame_len(&data, 1024);
        if let Ok(s) = std::str::from_utf8(&data) {
            let _ = SipUri::parse(s);
            let _ = NameAddr::parse(s);
            let _ = Via::parse(s);
            let _ = super::digest::Credentials::parse(s);
            let _ = super::digest::Credentials::parse(&format!("Digest {s}"));
            let _ = crate::media::sdp::media_info(s.as_bytes());
            let _ = crate::media::sdp::rewrite(s.as_bytes(), "127.0.0.1:20000".parse().unwrap());
        }
    }

    #[test]
    fn mutated_messages_never_panic(pos in 0usize..300, byte in proptest::num::u8::ANY) {
        let mut raw = BASIC.as_bytes().to_vec();
        let p = pos % raw.len();
        raw[p] = byte;
        if let Ok(m) = SipMessage::parse_datagram(Bytes::from(raw)) {
            for v in m.header_values(&HeaderName::Via) { let _ = Via::parse(v); }
            if let Some(u) = m.request_uri() { let _ = SipUri::parse(u); }
        }
    }
}

#[test]
fn top_via_is_the_first_element_of_the_first_non_empty_via() {
    let parse = |vias: &str| {
        let raw = format!("OPTIONS sip:x SIP/2.0\r\n{vias}Call-ID: a\r\nCSeq: 1 OPTIONS\r\n\r\n");
        SipMessage::parse_datagram(Bytes::from(raw)).unwrap()
    };
    let lone = parse("Via: SIP/2.0/UDP a;branch=z9hG4bK1  \r\nVia: SIP/2.0/UDP b\r\n");
    assert_eq!(lone.top_via(), Some("SIP/2.0/UDP a;branch=z9hG4bK1"));
    let listed = parse("Via: SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/UDP b\r\n");
    assert_eq!(listed.top_via(), Some("SIP/2.0/UDP a;branch=z9hG4bK1"));
    let empty_first = parse("Via: \r\nVia: SIP/2.0/UDP b;branch=z9hG4bK2\r\n");
    assert_eq!(empty_first.top_via(), Some("SIP/2.0/UDP b;branch=z9hG4bK2"));
    // Replacing the top element keeps the rest of the list.
    let mut m = listed;
    m.set_top_via("SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.1".into());
    assert_eq!(
        m.header_values(&HeaderName::Via).collect::<Vec<_>>(),
        ["SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.1", "SIP/2.0/UDP b"]
    );
    let mut m = lone;
    m.set_top_via("SIP/2.0/UDP a;received=192.0.2.1".into());
    assert_eq!(
        m.header_values(&HeaderName::Via).collect::<Vec<_>>(),
        ["SIP/2.0/UDP a;received=192.0.2.1", "SIP/2.0/UDP b"]
    );
}
