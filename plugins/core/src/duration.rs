//! Duration settings: a number followed by a unit (`500ms`, `1.5s`, `2m`),
//! a bare number being seconds. Each plugin picks its units, whether a
//! fraction is allowed and the range, and says so in its setting's
//! description and error; the parsing itself is this one.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::Error;

/// A unit suffix and the length of one.
pub type Unit = (&'static str, Duration);

/// Milliseconds (`ms`) or seconds (`s`).
pub const MILLIS_OR_SECONDS: &[Unit] = &[
    ("ms", Duration::from_millis(1)),
    ("s", Duration::from_secs(1)),
];

/// Minutes (`m`) or seconds (`s`).
pub const MINUTES_OR_SECONDS: &[Unit] = &[
    ("m", Duration::from_secs(60)),
    ("s", Duration::from_secs(1)),
];

/// The number and the length of one unit: the first of `units` whose suffix
/// ends the (trimmed) value, else seconds. White space around the number is
/// ignored.
fn split<'a>(text: &'a str, units: &[Unit]) -> (&'a str, Duration) {
    let t = text.trim();
    units
        .iter()
        .find_map(|(suffix, one)| t.strip_suffix(suffix).map(|n| (n.trim(), *one)))
        .unwrap_or((t.trim(), Duration::from_secs(1)))
}

/// A decimal number of `units` (`1.5s`, `500ms`, `2`), within `range`
/// (inclusive); `None` when it is no number, not finite or out of range.
pub fn decimal(text: &str, units: &[Unit], range: RangeInclusive<Duration>) -> Option<Duration> {
    let (num, one) = split(text, units);
    num.parse::<f64>()
        .ok()
        .map(|n| n * one.as_secs_f64())
        .filter(|s| {
            s.is_finite() && *s >= range.start().as_secs_f64() && *s <= range.end().as_secs_f64()
        })
        .map(Duration::from_secs_f64)
}

/// A whole number of `units` (`30`, `30s`, `2m`), more than zero; `None`
/// when it is no whole number, zero, or longer than a `Duration` holds.
pub fn whole(text: &str, units: &[Unit]) -> Option<Duration> {
    const NANOS: u128 = 1_000_000_000;
    let (num, one) = split(text, units);
    let n = num.parse::<u64>().ok().filter(|n| *n > 0)?;
    let total = one.as_nanos().checked_mul(u128::from(n))?;
    let secs = u64::try_from(total / NANOS).ok()?;
    Some(Duration::new(secs, (total % NANOS) as u32))
}

/// The setting `key`: whole seconds, `30` or `30s`, or minutes, `2m`; more
/// than zero. The error (`config`) names the key, the value and the forms
/// accepted.
pub fn seconds_or_minutes(key: &str, value: &str) -> Result<Duration, Error> {
    whole(value, MINUTES_OR_SECONDS).ok_or_else(|| {
        Error::config(format!(
            "setting `{key}` = {value:?} is not a duration; write seconds, e.g. 30 or 30s, or minutes, e.g. 2m"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn decimal_takes_fractions_and_units_within_the_range() {
        let tftp = |v| decimal(v, MILLIS_OR_SECONDS, MS..=Duration::from_secs(255));
        assert_eq!(tftp("1s"), Some(Duration::from_secs(1)));
        assert_eq!(tftp(" 500ms "), Some(Duration::from_millis(500)));
        assert_eq!(tftp("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(tftp("2"), Some(Duration::from_secs(2)));
        assert_eq!(tftp("1 ms"), Some(MS));
        assert_eq!(tftp("255"), Some(Duration::from_secs(255)));
        for bad in [
            "", "s", "0", "0.5ms", "256s", "1m", "inf", "NaN", "-1", "fast",
        ] {
            assert_eq!(tftp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn whole_takes_whole_numbers_of_a_unit() {
        let w = |v| whole(v, MINUTES_OR_SECONDS);
        assert_eq!(w("30"), Some(Duration::from_secs(30)));
        assert_eq!(w("7s"), Some(Duration::from_secs(7)));
        assert_eq!(w(" 2m "), Some(Duration::from_secs(120)));
        assert_eq!(
            whole("250ms", MILLIS_OR_SECONDS),
            Some(Duration::from_millis(250))
        );
        for bad in [
            "0",
            "0s",
            "1.5s",
            "-3",
            "1h",
            "ms",
            "",
            "18446744073709551615m",
        ] {
            assert_eq!(w(bad), None, "{bad:?}");
        }
        assert_eq!(
            w("18446744073709551615s"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn seconds_or_minutes_names_the_key_and_the_forms() {
        assert_eq!(
            seconds_or_minutes("timeout", "2m").unwrap(),
            Duration::from_secs(120)
        );
        let e = seconds_or_minutes("timeout", "soon").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Config);
        assert_eq!(
            e.message,
            "setting `timeout` = \"soon\" is not a duration; write seconds, e.g. 30 or 30s, or minutes, e.g. 2m"
        );
    }
}
