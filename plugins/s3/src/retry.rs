//! The retry bound and its backoff: exponential with jitter, as AWS asks of
//! clients that get SlowDown/503
//! (<https://docs.aws.amazon.com/general/latest/gr/api-retries.html>).

use std::time::Duration;

/// Attempts of one request, the first included. With the delays below a
/// request gives up after about 24 s of waiting in total.
pub const ATTEMPTS: u32 = 8;
const BASE: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(8);

#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Count a failed attempt; the wait before the next one, or `None`
    /// once the bound is reached. `random` spreads clients that failed
    /// together ("equal jitter": half fixed, half random).
    pub fn next(&mut self, random: u64) -> Option<Duration> {
        self.failures += 1;
        if self.failures >= ATTEMPTS {
            return None;
        }
        let full = BASE
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(CAP);
        let half = full / 2;
        let jitter = Duration::from_nanos(random % (half.as_nanos() as u64).max(1));
        Some(half + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_then_stops() {
        let mut b = Backoff::new();
        let mut waits = vec![];
        while let Some(d) = b.next(0) {
            waits.push(d);
        }
        assert_eq!(waits.len() as u32, ATTEMPTS - 1);
        assert_eq!(waits[0], Duration::from_millis(125));
        assert_eq!(waits[1], Duration::from_millis(250));
        assert_eq!(*waits.last().unwrap(), CAP / 2);
        let mut b = Backoff::new();
        let d = b.next(u64::MAX).unwrap();
        assert!(d >= Duration::from_millis(125) && d < Duration::from_millis(250));
    }
}
