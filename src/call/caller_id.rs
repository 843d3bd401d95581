//! What a user's external call presents (the seed's general settings): the
//! group's caller ID over the account's; one of the user's own caller IDs
//! when the account allows the choice, picked by a dial prefix (`*31<n>`)
//! or an `X-Caller-ID` header; anonymous by prefix (`*67`) or a Privacy
//! header (RFC 3323). A choice that is not allowed is replaced by the
//! default and logged, never sent.

use crate::config::{Account, CallerIdIn, Trunk, User};
use crate::sip::{HeaderName, SipMessage};

/// A call's caller ID toward the outside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presentation {
    /// The number presented (None: the trunk's own user).
    pub number: Option<String>,
    /// Presented as anonymous (Privacy: id); `number` still goes to the
    /// provider in P-Asserted-Identity.
    pub anonymous: bool,
    /// Numbers `set_caller_id` may choose.
    pub allowed: Vec<String>,
}

/// The presentation of `user`'s call to `dialled` (from `invite`), and the
/// number to route once the prefixes are taken off.
pub fn for_user(account: &Account, user: &User, invite: &SipMessage, dialled: &str) -> (Presentation, String) {
    let rules = &account.caller_ids;
    let default = account
        .groups
        .iter()
        .filter(|g| g.members.contains(&user.extension))
        .find_map(|g| g.caller_id.clone())
        .or_else(|| rules.default.clone());
    let mut allowed: Vec<String> = default.iter().cloned().collect();
    if rules.choice {
        allowed.extend(user.caller_ids.iter().cloned());
    }
    let mut chosen: Option<String> = None;
    let refuse = |what: &str| {
        tracing::warn!(user = %user.extension, caller_id = %what, "caller ID not allowed for this user; the default is presented");
    };
    let mut rest = dialled;
    let mut anonymous = false;
    for _ in 0..2 {
        if let Some(r) = rest
            .strip_prefix(rules.anonymous_prefix.as_str())
            .filter(|_| !rules.anonymous_prefix.is_empty())
        {
            anonymous = true;
            rest = r;
        } else if let Some(r) = rest
            .strip_prefix(rules.choice_prefix.as_str())
            .filter(|_| !rules.choice_prefix.is_empty())
        {
            let n = r.chars().next().and_then(|c| c.to_digit(10)).unwrap_or(0) as usize;
            rest = r.get(1..).unwrap_or("");
            match user.caller_ids.get(n.wrapping_sub(1)).filter(|_| rules.choice) {
                Some(c) => chosen = Some(c.clone()),
                None => refuse(&format!("choice {n}")),
            }
        }
    }
    if let Some(asked) = invite.header(&HeaderName::Other("X-Caller-ID".into())).map(str::trim) {
        if rules.choice && user.caller_ids.iter().any(|c| c == asked) {
            chosen = Some(asked.to_string());
        } else {
            refuse(asked);
        }
    }
    let privacy = invite
        .header(&HeaderName::Other("Privacy".into()))
        .is_some_and(|p| p.split(';').any(|v| v.trim().eq_ignore_ascii_case("id")));
    let presentation = Presentation {
        number: chosen.or(default),
        anonymous: anonymous || privacy,
        allowed,
    };
    (presentation, rest.to_string())
}

/// A call's caller ID as one trunk carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TowardTrunk {
    pub from_user: String,
    pub from_domain: String,
    /// Replaces the caller's display name (anonymous calls).
    pub from_name: Option<&'static str>,
    /// P-Asserted-Identity and Privacy, as they apply.
    pub headers: Vec<(HeaderName, String)>,
}

/// From, P-Asserted-Identity (RFC 3325) and Privacy (RFC 3323) for a call
/// with `p` through `trunk`. An anonymous call's From says nothing; the
/// provider still gets the number in P-Asserted-Identity.
pub fn toward_trunk(p: &Presentation, trunk: &Trunk) -> TowardTrunk {
    let number = p.number.clone().unwrap_or_else(|| trunk.from_user.clone());
    let asserted = (
        HeaderName::Other("P-Asserted-Identity".into()),
        format!("<sip:{number}@{}>", trunk.from_domain),
    );
    if p.anonymous {
        return TowardTrunk {
            from_user: "anonymous".into(),
            from_domain: "anonymous.invalid".into(),
            from_name: Some("Anonymous"),
            headers: vec![asserted, (HeaderName::Other("Privacy".into()), "id".into())],
        };
    }
    let in_from = matches!(trunk.caller_id_in, CallerIdIn::From | CallerIdIn::Both);
    let in_pai = matches!(trunk.caller_id_in, CallerIdIn::Pai | CallerIdIn::Both);
    TowardTrunk {
        from_user: if in_from { number } else { trunk.from_user.clone() },
        from_domain: trunk.from_domain.clone(),
        from_name: None,
        headers: if in_pai { vec![asserted] } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use bytes::Bytes;
    use std::path::Path;

    fn account(choice: bool) -> crate::config::Account {
        let text = format!(
            "[[accounts]]\ndomain = \"pbx.test\"\ncaller_id = \"+34910000000\"\ncaller_id_choice = {choice}\n\
             [[accounts.users]]\nextension = \"1001\"\npassword = \"x\"\ncaller_ids = [\"+34910000007\", \"+34910000008\"]\n\
             [[accounts.users]]\nextension = \"1002\"\npassword = \"x\"\n\
             [[accounts.groups]]\nnumber = \"2001\"\nmembers = [\"1002\"]\ncaller_id = \"+34910000099\"\n"
        );
        Config::parse(Path::new("t.toml"), &text).unwrap().accounts.remove(0)
    }

    fn invite(extra: &str) -> SipMessage {
        SipMessage::parse_datagram(Bytes::from(format!(
            "INVITE sip:x@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:1001@pbx.test>;tag=1\r\nTo: <sip:x@pbx.test>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )))
        .unwrap()
    }

    #[test]
    fn the_group_overrides_the_account_and_choices_must_be_allowed() {
        let a = account(true);
        let (u1, u2) = (a.user("1001").unwrap(), a.user("1002").unwrap());
        let (p, to) = for_user(&a, u1, &invite(""), "0611");
        assert_eq!(
            (p.number.as_deref(), p.anonymous, to.as_str()),
            (Some("+34910000000"), false, "0611")
        );
        assert_eq!(
            for_user(&a, u2, &invite(""), "0611").0.number.as_deref(),
            Some("+34910000099")
        );
        // A prefix picks the second; a header picks the first.
        let (p, to) = for_user(&a, u1, &invite(""), "*3120611");
        assert_eq!((p.number.as_deref(), to.as_str()), (Some("+34910000008"), "0611"));
        let p = for_user(&a, u1, &invite("X-Caller-ID: +34910000007\r\n"), "0611").0;
        assert_eq!(p.number.as_deref(), Some("+34910000007"));
        // Not the user's: the default goes instead.
        let p = for_user(&a, u1, &invite("X-Caller-ID: +34999999999\r\n"), "0611").0;
        assert_eq!(p.number.as_deref(), Some("+34910000000"));
        let (p, to) = for_user(&a, u1, &invite(""), "*3190611");
        assert_eq!((p.number.as_deref(), to.as_str()), (Some("+34910000000"), "0611"));
        // Without the account's permission no choice holds.
        let a = account(false);
        let p = for_user(
            &a,
            a.user("1001").unwrap(),
            &invite("X-Caller-ID: +34910000007\r\n"),
            "0611",
        )
        .0;
        assert_eq!(p.number.as_deref(), Some("+34910000000"));
        assert_eq!(p.allowed, ["+34910000000"]);
    }

    #[test]
    fn anonymous_by_prefix_or_privacy_header() {
        let a = account(true);
        let u = a.user("1001").unwrap();
        let (p, to) = for_user(&a, u, &invite(""), "*67*3110611");
        assert_eq!(
            (p.anonymous, p.number.as_deref(), to.as_str()),
            (true, Some("+34910000007"), "0611")
        );
        assert!(for_user(&a, u, &invite("Privacy: id\r\n"), "0611").0.anonymous);
        assert!(!for_user(&a, u, &invite("Privacy: none\r\n"), "0611").0.anonymous);
    }
}

#[cfg(test)]
mod toward_trunk_tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn trunk(caller_id_in: &str) -> crate::config::Trunk {
        let text = format!(
            "[[trunks]]\nname = \"t\"\naddress = \"127.0.0.1:5099\"\nusername = \"acme\"\nfrom_domain = \"prov.test\"\ncaller_id_in = \"{caller_id_in}\"\n\
             [[accounts]]\ndomain = \"pbx.test\"\n"
        );
        Config::parse(Path::new("t.toml"), &text).unwrap().trunks.remove(0)
    }

    #[test]
    fn the_caller_id_goes_where_the_trunk_says() {
        let p = Presentation {
            number: Some("+34910000000".into()),
            ..Presentation::default()
        };
        let from = toward_trunk(&p, &trunk("from"));
        assert_eq!((from.from_user.as_str(), from.headers.len()), ("+34910000000", 0));
        let pai = toward_trunk(&p, &trunk("pai"));
        assert_eq!(pai.from_user, "acme", "From keeps the trunk's user");
        assert_eq!(pai.headers[0].1, "<sip:+34910000000@prov.test>");
        let both = toward_trunk(&p, &trunk("both"));
        assert_eq!((both.from_user.as_str(), both.headers.len()), ("+34910000000", 1));
        // No caller ID: the trunk's user everywhere.
        assert_eq!(toward_trunk(&Presentation::default(), &trunk("both")).from_user, "acme");
    }
}
