//! Checks a parsed request has what RFC 3261 §8.1.1 requires before any
//! handler sees it; failures become 400 with a reason naming the fault.

use super::addr::{CSeq, NameAddr};
use super::{HeaderName, SipError, SipMessage};

/// The top Via is not checked here: the transaction layer parsed it before
/// (a request without a usable one has nowhere to be answered, and is dropped).
pub fn validate_request(req: &SipMessage) -> Result<(), SipError> {
    let bad = |what: &str| SipError::with_reason(400, format!("Bad Request ({what})"));
    let method = req.method().ok_or_else(|| bad("not a request"))?;
    for (name, label) in [(HeaderName::From, "From"), (HeaderName::To, "To")] {
        let v = req.header(&name).ok_or_else(|| bad(&format!("missing {label}")))?;
        let addr = NameAddr::parse(v).map_err(|_| bad(&format!("malformed {label}")))?;
        if !addr.uri_text.contains(':') {
            return Err(bad(&format!("malformed {label} URI")));
        }
    }
    req.call_id()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("missing Call-ID"))?;
    let cseq = req
        .header(&HeaderName::CSeq)
        .and_then(CSeq::parse)
        .ok_or_else(|| bad("malformed CSeq"))?;
    if &cseq.method != method {
        return Err(bad("CSeq method does not match"));
    }
    if let Some(mf) = req.header(&HeaderName::MaxForwards) {
        mf.trim().parse::<u8>().map_err(|_| bad("malformed Max-Forwards"))?;
    }
    let uri = req.request_uri().unwrap_or("");
    let scheme = uri.split(':').next().unwrap_or("");
    if !["sip", "sips", "tel"].iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(SipError::new(416));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(extra_replace: (&str, &str)) -> SipMessage {
        let raw = "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n"
            .replace(extra_replace.0, extra_replace.1);
        SipMessage::parse_datagram(Bytes::from(raw)).unwrap()
    }

    #[test]
    fn mandatory_headers() {
        assert!(validate_request(&req(("", ""))).is_ok());
        let reason = |r: (&str, &str)| validate_request(&req(r)).unwrap_err().reason.unwrap();
        assert_eq!(reason(("Call-ID: c\r\n", "")), "Bad Request (missing Call-ID)");
        assert_eq!(
            reason(("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")),
            "Bad Request (CSeq method does not match)"
        );
        assert_eq!(
            reason(("Max-Forwards: 70", "Max-Forwards: lots")),
            "Bad Request (malformed Max-Forwards)"
        );
        assert_eq!(
            reason(("To: <sip:b@h>", "To: nobody")),
            "Bad Request (malformed To URI)"
        );
        assert_eq!(
            validate_request(&req(("OPTIONS sip:h", "OPTIONS http:h")))
                .unwrap_err()
                .status,
            416
        );
    }
}
