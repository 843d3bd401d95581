//! REGISTER: resolves the account, authenticates (401 challenge), checks
//! the authenticated user may register the To address (§10.3 step 5),
//! applies the registrar and answers with the bindings (§10.3 step 8).

use super::handler::{
    addressed_account, authenticate, outcome, Challenger, Outcome, RequestContext, RequestHandler, Stop,
};
use crate::registrar::contact_headers;
use crate::sip::addr::NameAddr;
use crate::sip::response::random_token;
use crate::sip::{HeaderName, Method, SipError, SipMessage};

pub struct RegisterHandler;

impl RequestHandler for RegisterHandler {
    fn handle(&mut self, req: &SipMessage, cx: &mut RequestContext<'_>) -> Option<Outcome> {
        if req.method() != Some(&Method::Register) {
            return None;
        }
        Some(outcome(req, register(req, cx)))
    }
}

fn register(req: &SipMessage, cx: &mut RequestContext<'_>) -> Result<Outcome, Stop> {
    let (_ruri, account) = addressed_account(req, cx.config)?;
    let user = authenticate(req, cx, account, Challenger::Registrar)?;
    // Read after the challenge: half of all REGISTERs are answered with
    // one, and need no To user (validation already found To well formed).
    let to = req.header(&HeaderName::To).unwrap_or("");
    let to_user = NameAddr::parse(to)
        .ok()
        .and_then(|a| a.uri().ok().and_then(|u| u.user_unescaped().map(|u| u.into_owned())))
        .ok_or_else(|| SipError::with_reason(400, "Bad To"))?;
    if user.extension != to_user {
        return Err(SipError::with_reason(403, "Not allowed to register this address").into());
    }
    let aor = format!("{}@{}", user.extension, account.domain);
    let outcome = cx
        .engines
        .registrar
        .register(req, &aor, cx.from, &cx.config.registrar, cx.now.unix_s())?;
    // Stored first: memory never holds a binding the store failed to keep.
    if let Some(op) = &outcome.store {
        cx.persist(std::slice::from_ref(op))?;
    }
    cx.engines.registrar.apply(&outcome);
    tracing::info!(aor = %aor, contacts = outcome.current.len(), source = %cx.from.addr, "registered");
    // A device came online: push the chat messages waiting for this user.
    if !outcome.current.is_empty() {
        super::chat_handler::push_next(cx.engines, cx.store, account, &aor, None, &cx.config.sip.user_agent);
    }
    let mut resp = crate::sip::response::response_to(req, 200, None, &random_token());
    for c in contact_headers(&outcome.current, cx.now.unix_s()) {
        resp.push_header(HeaderName::Contact, c);
    }
    resp.push_header(HeaderName::Date, httpdate(cx.now.unix_s()));
    Ok(Outcome::Respond(resp))
}

/// RFC 3261 §20.17 Date (RFC 1123 format, GMT).
pub fn httpdate(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86400;
    let secs = unix % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Written digit by digit: `format!` with padding was 3,000 instructions,
    // and every 200 OK to a REGISTER carries a Date.
    let two = |out: &mut String, n: u64| {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    let mut out = String::with_capacity(29);
    out.push_str(DAYS[(days % 7) as usize]);
    out.push_str(", ");
    two(&mut out, d as u64);
    out.push(' ');
    out.push_str(MONTHS[(m - 1) as usize]);
    out.push(' ');
    if (1000..10_000).contains(&y) {
        two(&mut out, y as u64 / 100);
        two(&mut out, y as u64 % 100);
    } else {
        out.push_str(&y.to_string());
    }
    out.push(' ');
    two(&mut out, secs / 3600);
    out.push(':');
    two(&mut out, (secs % 3600) / 60);
    out.push(':');
    two(&mut out, secs % 60);
    out.push_str(" GMT");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn httpdate_matches_known_values() {
        assert_eq!(super::httpdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(super::httpdate(1_795_910_400), "Sun, 29 Nov 2026 00:00:00 GMT");
        assert_eq!(super::httpdate(951_827_696), "Tue, 29 Feb 2000 12:34:56 GMT");
    }
}
