//! Numbers as a provider wants them: E.164 (`+34911234567`) or the
//! national form (`0911234567`), from what a user dialled (national with
//! or without its prefix, international with `00` or `+`).

/// How a trunk wants called numbers written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberFormat {
    /// Sent as dialled.
    AsDialled,
    E164 {
        country_code: String,
        national_prefix: String,
        international_prefix: String,
    },
    National {
        country_code: String,
        national_prefix: String,
        international_prefix: String,
    },
}

impl NumberFormat {
    /// A caller's number from the provider, in E.164 when the trunk has a
    /// country (so history and the CRM see one form); anything that is
    /// not a number (`anonymous`) is left as it is.
    pub fn caller_e164(&self, number: &str) -> String {
        let digits = number.strip_prefix('+').unwrap_or(number);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return number.to_string();
        }
        match self {
            NumberFormat::AsDialled => number.to_string(),
            NumberFormat::E164 {
                country_code,
                national_prefix,
                international_prefix,
            }
            | NumberFormat::National {
                country_code,
                national_prefix,
                international_prefix,
            } => NumberFormat::E164 {
                country_code: country_code.clone(),
                national_prefix: national_prefix.clone(),
                international_prefix: international_prefix.clone(),
            }
            .apply(number),
        }
    }

    /// `dialled` in this format.
    pub fn apply(&self, dialled: &str) -> String {
        let (cc, np, ip, national) = match self {
            NumberFormat::AsDialled => return dialled.to_string(),
            NumberFormat::E164 {
                country_code,
                national_prefix,
                international_prefix,
            } => (country_code, national_prefix, international_prefix, false),
            NumberFormat::National {
                country_code,
                national_prefix,
                international_prefix,
            } => (country_code, national_prefix, international_prefix, true),
        };
        let e164 = if let Some(rest) = dialled.strip_prefix('+') {
            format!("+{rest}")
        } else if let Some(rest) = dialled.strip_prefix(ip.as_str()).filter(|_| !ip.is_empty()) {
            format!("+{rest}")
        } else if let Some(rest) = dialled.strip_prefix(np.as_str()).filter(|_| !np.is_empty()) {
            format!("+{cc}{rest}")
        } else {
            format!("+{cc}{dialled}")
        };
        if !national {
            return e164;
        }
        match e164.strip_prefix(&format!("+{cc}")) {
            Some(subscriber) => format!("{np}{subscriber}"),
            None => format!("{ip}{}", &e164[1..]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A country's format: E.164 or national.
    fn country(cc: &str, national_prefix: &str, national: bool) -> NumberFormat {
        let (country_code, national_prefix, international_prefix) = (cc.into(), national_prefix.into(), "00".into());
        if national {
            NumberFormat::National {
                country_code,
                national_prefix,
                international_prefix,
            }
        } else {
            NumberFormat::E164 {
                country_code,
                national_prefix,
                international_prefix,
            }
        }
    }

    fn spain(national: bool) -> NumberFormat {
        country("34", "", national)
    }

    fn uk(national: bool) -> NumberFormat {
        country("44", "0", national)
    }

    #[test]
    fn national_and_international_forms_become_e164_and_back() {
        assert_eq!(spain(false).apply("611223344"), "+34611223344");
        assert_eq!(spain(false).apply("0033123456789"), "+33123456789");
        assert_eq!(spain(false).apply("+34611223344"), "+34611223344");
        assert_eq!(uk(false).apply("02071234567"), "+442071234567");
        assert_eq!(uk(true).apply("+442071234567"), "02071234567");
        assert_eq!(uk(true).apply("+33123456789"), "0033123456789");
        assert_eq!(spain(true).apply("+34611223344"), "611223344");
        assert_eq!(NumberFormat::AsDialled.apply("*123"), "*123");
        // Callers from the provider: to E.164, names left alone.
        assert_eq!(uk(true).caller_e164("02071234567"), "+442071234567");
        assert_eq!(spain(false).caller_e164("611223344"), "+34611223344");
        assert_eq!(spain(false).caller_e164("anonymous"), "anonymous");
        assert_eq!(NumberFormat::AsDialled.caller_e164("611223344"), "611223344");
    }
}
