//! Phone numbers as people write them: "+34 600 12 34 56", "0034600123456"
//! and "600123456" are one number when a call arrives from it.

/// A number with only its digits, and `+` in front when it is international
/// (written with `+` or the `00` international prefix).
pub fn normalise(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    if number.trim_start().starts_with('+') {
        format!("+{digits}")
    } else if let Some(rest) = digits.strip_prefix("00") {
        format!("+{rest}")
    } else {
        digits
    }
}

/// Fewest digits a number written without its country code must have to
/// match the end of an international one.
pub const MIN_SUFFIX_DIGITS: usize = 7;

/// Whether `a` and `b` are the same number: equal once normalised, or one
/// written nationally (without country code or trunk `0`) and the other
/// ending with it. Two international numbers must be equal.
pub fn same_number(a: &str, b: &str) -> bool {
    let (a, b) = (normalise(a), normalise(b));
    if a == b {
        return true;
    }
    if a.is_empty() || b.is_empty() || (a.starts_with('+') && b.starts_with('+')) {
        return false;
    }
    let bare = |s: &str| s.trim_start_matches('+').trim_start_matches('0').to_string();
    let (x, y) = (bare(&a), bare(&b));
    let (short, long) = if x.len() <= y.len() { (x, y) } else { (y, x) };
    if !a.starts_with('+') && !b.starts_with('+') {
        // Both national: one may carry the trunk prefix `0` the other lacks.
        return short == long;
    }
    short.len() >= MIN_SUFFIX_DIGITS && long.ends_with(&short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_across_the_ways_they_are_written() {
        assert_eq!(normalise(" +34 (600) 12-34-56"), "+34600123456");
        assert_eq!(normalise("0034 600"), "+34600");
        assert!(same_number("+34 600 123 456", "0034600123456"));
        assert!(same_number("+34 600 123 456", "600123456"));
        assert!(same_number("020 7946 0958", "+44 20 7946 0958"));
        assert!(same_number("020 7946 0958", "2079460958"));
        assert!(!same_number("+34600123456", "+44600123456"));
        assert!(
            !same_number("123456", "+34600123456"),
            "too short to stand for the whole"
        );
        assert!(!same_number("1004", "2004"));
        assert!(same_number("1004", "1004"));
        assert!(!same_number("", "1004"));
    }
}
