//! Server replies and the small parsers for the ones that carry data.

use std::fmt;

/// One reply from the control connection (RFC 959 §4.2): a three-digit code
/// and its text. For a multi-line reply `text` holds the first line's text;
/// `lines` holds the text of every line (for replies such as MLST's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    pub text: String,
    pub lines: Vec<String>,
}

impl Reply {
    /// 1yz: positive preliminary ("150 opening data connection").
    pub fn is_preliminary(&self) -> bool {
        (100..200).contains(&self.code)
    }

    /// 2yz: positive completion.
    pub fn is_completion(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 500/502/504: the server does not know or implement the command
    /// (RFC 959 §4.2.2); the signal to fall back to an older command.
    pub fn is_not_implemented(&self) -> bool {
        matches!(self.code, 500 | 502 | 504)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Most of a reply line kept for messages; the rest is dropped.
const MAX_TEXT: usize = 300;

/// Makes server text safe to show: control characters become spaces and
/// long text is cut.
pub(crate) fn clean_text(raw: &str) -> String {
    let mut out: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TEXT)
        .collect();
    if raw.trim().chars().count() > MAX_TEXT {
        out.push('…');
    }
    out
}

/// The port of a 229 reply to EPSV: "229 Entering Extended Passive Mode
/// (|||6446|)". RFC 2428 §3: the text holds `(<d><d><d><port><d>)` where `<d>`
/// is a delimiter the server chooses (normally `|`); address fields are empty.
pub(crate) fn parse_epsv(text: &str) -> Option<u16> {
    let open = text.find('(')?;
    let rest = &text[open + 1..];
    let close = rest.find(')')?;
    let inner = &rest[..close];
    let d = inner.chars().next()?;
    if !(33..=126).contains(&(d as u32)) {
        return None;
    }
    let fields: Vec<&str> = inner.split(d).collect();
    // "|||6446|" splits into ["", "", "", "6446", ""].
    if fields.len() != 5 || !fields[4].is_empty() {
        return None;
    }
    fields[3].parse().ok().filter(|p| *p != 0)
}

/// The port of a 227 reply to PASV: "227 Entering Passive Mode
/// (h1,h2,h3,h4,p1,p2)". RFC 959 §4.1.2 gives the six numbers but not the
/// exact text around them, so take the first run of six comma-separated
/// numbers. The address is returned too but the client does not use it:
/// it connects to the address it already talks to (see `Client::open_data`).
pub(crate) fn parse_pasv(text: &str) -> Option<([u8; 4], u16)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let run_end = bytes[i..]
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b','))
                .map_or(bytes.len(), |p| i + p);
            let nums: Vec<&str> = text[i..run_end].split(',').collect();
            if nums.len() == 6 {
                let mut v = [0u8; 6];
                let mut ok = true;
                for (slot, n) in v.iter_mut().zip(&nums) {
                    match n.parse::<u8>() {
                        Ok(x) => *slot = x,
                        Err(_) => ok = false,
                    }
                }
                if ok {
                    let port = u16::from(v[4]) << 8 | u16::from(v[5]);
                    if port != 0 {
                        return Some(([v[0], v[1], v[2], v[3]], port));
                    }
                }
            }
            i = run_end;
        } else {
            i += 1;
        }
    }
    None
}

/// The size in a 213 reply to SIZE (RFC 3659 §4.2: "213 <SP> size").
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Seconds since the Unix epoch for an RFC 3659 §2.3 time-val,
/// `YYYYMMDDHHMMSS[.sss]`, always in UTC. Fractions are dropped.
pub(crate) fn parse_time_val(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.split('.').next()?;
    if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |a: usize, b: usize| digits[a..b].parse::<i64>().ok();
    let (y, mo, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (h, mi, se) = (n(8, 10)?, n(10, 12)?, n(12, 14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsv() {
        assert_eq!(
            parse_epsv("Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(parse_epsv("ok (!!!21!)"), Some(21));
        assert_eq!(parse_epsv("(|||0|)"), None);
        assert_eq!(parse_epsv("(|||x|)"), None);
        assert_eq!(parse_epsv("no parens"), None);
        assert_eq!(parse_epsv("(||6446|)"), None);
    }

    #[test]
    fn pasv() {
        assert_eq!(
            parse_pasv("Entering Passive Mode (127,0,0,1,117,49)."),
            Some(([127, 0, 0, 1], 30001))
        );
        assert_eq!(parse_pasv("=10,0,0,7,4,1"), Some(([10, 0, 0, 7], 1025)));
        assert_eq!(parse_pasv("Entering Passive Mode (1,2,3)"), None);
        assert_eq!(parse_pasv("(300,0,0,1,4,1)"), None);
    }

    #[test]
    fn time_val() {
        assert_eq!(parse_time_val("19700101000000"), Some(0));
        assert_eq!(parse_time_val("20240229123456"), Some(1_709_210_096));
        assert_eq!(parse_time_val("20240229123456.789"), Some(1_709_210_096));
        assert_eq!(parse_time_val("2024022912345"), None);
        assert_eq!(parse_time_val("20241329123456"), None);
    }

    #[test]
    fn text_is_cleaned() {
        assert_eq!(clean_text(" a\tb\u{7}c "), "a b c");
        assert_eq!(clean_text(&"x".repeat(400)).chars().count(), MAX_TEXT + 1);
    }
}
