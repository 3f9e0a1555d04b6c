//! Attempts with backoff, as the notifiers (smtp, webhook) make them: up to
//! `retries + 1` attempts, a wait between them that doubles (or the one the
//! server asked for), a warning per retry, and when every attempt failed a
//! `transient` error naming the last failure and the `retries` setting.

use std::time::Duration;

use crate::Error;

/// First wait between attempts; doubled after each, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Wait before attempt `attempt + 1` (attempts count from 1): 1 s, 2 s, 4 s,
/// …, at most [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// Checks the `retries` setting (`retries`, the value given or the
/// plugin's default): at most `max`, else a `config` error saying what is
/// accepted.
pub fn check_retries(retries: u32, max: u32) -> Result<u32, Error> {
    if retries > max {
        return Err(Error::config(format!(
            "setting `retries` = {retries} is too many; write 0 to {max}"
        )));
    }
    Ok(retries)
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome<E> {
    Done,
    /// Worth another attempt: why this one failed, and the wait the server
    /// asked for (else [`backoff`]).
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// No retry helps: the error for the runner.
    Final(E),
}

/// Makes up to `retries + 1` attempts until one is [`Outcome::Done`] or
/// [`Outcome::Final`]. Before each retry, `warn` hears
/// `attempt N of M failed: WHY; retrying in S s` and the thread sleeps the
/// wait. When the last attempt asks for a retry too, the error is
/// `transient`: `WHY (gave up after M attempts; `retries` = R)`.
pub fn with_retries<E: From<Error>>(
    retries: u32,
    warn: impl Fn(&str),
    mut attempt: impl FnMut() -> Outcome<E>,
) -> Result<(), E> {
    let attempts = retries + 1;
    let mut last = String::new();
    for n in 1..=attempts {
        match attempt() {
            Outcome::Done => return Ok(()),
            Outcome::Final(e) => return Err(e),
            Outcome::Retry { why, after } => {
                if n < attempts {
                    let wait = after.unwrap_or_else(|| backoff(n));
                    warn(&format!(
                        "attempt {n} of {attempts} failed: {why}; retrying in {}s",
                        wait.as_secs_f32()
                    ));
                    std::thread::sleep(wait);
                }
                last = why;
            }
        }
    }
    Err(E::from(Error::transient(format!(
        "{last} (gave up after {attempts} attempt{}; `retries` = {retries})",
        if attempts == 1 { "" } else { "s" },
    ))))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::ErrorKind;

    fn retry(why: &str) -> Outcome<Error> {
        Outcome::Retry {
            why: why.into(),
            after: Some(Duration::ZERO),
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn retries_are_capped() {
        assert_eq!(check_retries(10, 10).unwrap(), 10);
        let e = check_retries(11, 10).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.message,
            "setting `retries` = 11 is too many; write 0 to 10"
        );
    }

    #[test]
    fn gives_up_after_retries_plus_one_naming_the_last_failure() {
        let warned = RefCell::new(vec![]);
        let mut n = 0;
        let e = with_retries(
            2,
            |w| warned.borrow_mut().push(w.to_string()),
            || {
                n += 1;
                retry(&format!("refused {n}"))
            },
        )
        .unwrap_err();
        assert_eq!(n, 3);
        assert_eq!(e.kind, ErrorKind::Transient);
        assert_eq!(
            e.message,
            "refused 3 (gave up after 3 attempts; `retries` = 2)"
        );
        assert_eq!(
            *warned.borrow(),
            [
                "attempt 1 of 3 failed: refused 1; retrying in 0s",
                "attempt 2 of 3 failed: refused 2; retrying in 0s"
            ]
        );
        let e = with_retries(0, |_| {}, || retry("down")).unwrap_err();
        assert_eq!(e.message, "down (gave up after 1 attempt; `retries` = 0)");
    }

    #[test]
    fn a_final_answer_or_success_ends_the_attempts() {
        let mut n = 0;
        let r = with_retries(
            5,
            |_| {},
            || {
                n += 1;
                match n {
                    1 => retry("busy"),
                    _ => Outcome::Final(Error::config("bad address")),
                }
            },
        );
        assert_eq!(r.unwrap_err().message, "bad address");
        assert_eq!(n, 2);
        let mut n = 0;
        let r: Result<(), Error> = with_retries(
            5,
            |_| {},
            || {
                n += 1;
                if n < 3 { retry("busy") } else { Outcome::Done }
            },
        );
        assert!(r.is_ok());
        assert_eq!(n, 3);
    }
}
