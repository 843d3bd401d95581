//! Fuzzes the SIP parser and every typed view reachable from a message.
//! Run: cargo install cargo-fuzz && cargo +nightly fuzz run parse_message
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sip::addr::{CSeq, NameAddr, Via};
use switchboard::sip::message::frame_len;
use switchboard::sip::uri::SipUri;
use switchboard::sip::{HeaderName, SipMessage};

fuzz_target!(|data: &[u8]| {
    let _ = frame_len(data, 65535);
    if let Ok(msg) = SipMessage::parse_datagram(bytes::Bytes::copy_from_slice(data)) {
        for v in msg.header_values(&HeaderName::Via) {
            let _ = Via::parse(v);
        }
        for name in [HeaderName::From, HeaderName::To, HeaderName::Contact] {
            for v in msg.header_values(&name) {
                if let Ok(a) = NameAddr::parse(v) {
                    let _ = a.uri();
                }
            }
        }
        if let Some(c) = msg.header(&HeaderName::CSeq) {
            let _ = CSeq::parse(c);
        }
        if let Some(u) = msg.request_uri() {
            let _ = SipUri::parse(u);
        }
        let _ = switchboard::sip::validate::validate_request(&msg);
        let again = SipMessage::parse_datagram(msg.to_bytes()).expect("serialized message reparses");
        assert_eq!(again.body, msg.body);
    }
});
