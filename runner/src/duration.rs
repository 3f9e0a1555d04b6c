//! Human durations in settings: `90s`, `5m`, `1h`, `2d`, or plain seconds.

use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "`{s}` is not a duration; write a whole number with a unit, e.g. `30s`, `5m`, `1h`, `2d`"
        )
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| too_long(s))?;
    let per = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(per)
        .map(Duration::from_secs)
        .ok_or_else(|| too_long(s))
}

fn too_long(s: &str) -> String {
    if s.trim().chars().next().is_some_and(|c| c.is_ascii_digit()) {
        format!("`{s}` is far too long a duration")
    } else {
        format!(
            "`{s}` is not a duration; write a whole number with a unit, e.g. `30s`, `5m`, `1h`, `2d`"
        )
    }
}

pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if s > 0 || d.is_zero() {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse("1 hour").unwrap_err().contains("e.g."));
        assert!(parse("").is_err());
        assert!(
            parse("18446744073709551615d")
                .unwrap_err()
                .contains("too long")
        );
        assert!(
            parse("99999999999999999999999s")
                .unwrap_err()
                .contains("too long")
        );
        assert_eq!(format(Duration::from_secs(7200)), "2h");
    }
}
