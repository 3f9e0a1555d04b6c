//! When a job runs next: the pure schedule logic behind `offsite daemon`.
//!
//! Nothing here reads the clock or sleeps. Every function takes `now` so the
//! rules (seed 000's weekday/day-of-month anchor, seed 004's interval that
//! survives restarts, DST, missed slots) can be tested with a fake clock, and
//! so the daemon decides itself how to wait. Calendar arithmetic is generic
//! over [`chrono::TimeZone`]: the daemon passes [`chrono::Local`] (which honours
//! `TZ`), tests pass `chrono_tz::Europe::Berlin`.
//!
//! What must survive a restart lives in [`JobState`], persisted per job by
//! [`StateFile`] (in [`state_file`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

mod state_file;
pub use state_file::{StateFile, StateFileError};

/// Appended to every parse error, so a user who typed something wrong sees at
/// once what they could have typed instead.
pub const ACCEPTED_SCHEDULES: &str =
    "daily HH:MM, weekly HH:MM, monthly HH:MM, every N(h|m|s), manual";

/// A disabled job reminds the operator this often (seed 004: "every 24 hours").
pub const NOT_ENABLED_NOTICE_EVERY: TimeDelta = TimeDelta::hours(24);

/// A job's `schedule` setting, parsed.
///
/// Calendar schedules carry only the time of day: the weekday (weekly) and the
/// day of the month (monthly) are not configured but taken from the first run
/// after the job was enabled (seed 000), which is kept in [`JobState::anchor`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Schedule {
    /// Every day at this local time.
    Daily { at: NaiveTime },
    /// Once a week at this local time, on the anchor's weekday.
    Weekly { at: NaiveTime },
    /// Once a month at this local time, on the anchor's day of the month (or
    /// the month's last day when it is shorter).
    Monthly { at: NaiveTime },
    /// Measured from the start of the previous run, in real elapsed time, so
    /// DST and time-zone changes do not stretch or shrink it.
    Every(Duration),
    /// Only `offsite run JOB` starts it; the daemon never does.
    Manual,
}

/// Why a `schedule` string was refused. Carries the input so the config layer
/// can add file, line and key without repeating the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}`: {reason}; accepted schedules: {ACCEPTED_SCHEDULES}")]
pub struct ParseScheduleError {
    /// The string as the user wrote it.
    pub input: String,
    /// What is wrong with it, with an example of a correct value.
    pub reason: String,
}

impl FromStr for Schedule {
    type Err = ParseScheduleError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| ParseScheduleError {
            input: input.to_string(),
            reason,
        };
        let words: Vec<&str> = input.split_whitespace().collect();
        let Some((&kind, rest)) = words.split_first() else {
            return Err(fail("the schedule is empty".into()));
        };
        let kind_lc = kind.to_ascii_lowercase();
        match kind_lc.as_str() {
            "daily" | "weekly" | "monthly" => {
                let at = match rest {
                    [] => {
                        return Err(fail(format!(
                            "`{kind_lc}` needs a start time, e.g. `{kind_lc} 04:30`"
                        )));
                    }
                    [time] => parse_hh_mm(time).map_err(|why| {
                        fail(format!(
                            "{why}; the time must be HH:MM (24-hour), e.g. `{kind_lc} {}`",
                            loose_hh_mm(time).unwrap_or_else(|| "04:30".into())
                        ))
                    })?,
                    [_, extra, ..] => {
                        return Err(fail(format!(
                            "unexpected `{extra}` after the time; write only `{kind_lc} HH:MM` \
                             (times are in the machine's local time zone)"
                        )));
                    }
                };
                Ok(match kind_lc.as_str() {
                    "daily" => Schedule::Daily { at },
                    "weekly" => Schedule::Weekly { at },
                    _ => Schedule::Monthly { at },
                })
            }
            "every" => match rest {
                [] => Err(fail(
                    "`every` needs an interval, e.g. `every 6h`, `every 30m` or `every 2s`".into(),
                )),
                [n] => parse_interval(n).map(Schedule::Every).map_err(fail),
                [n, unit, ..] => Err(fail(format!(
                    "write the interval as one word without spaces, e.g. `every {n}{unit}`"
                ))),
            },
            "manual" => match rest {
                [] => Ok(Schedule::Manual),
                _ => Err(fail(
                    "`manual` takes nothing after it; the job runs only with `offsite run JOB`"
                        .into(),
                )),
            },
            _ => Err(fail(format!("unknown schedule kind `{kind}`"))),
        }
    }
}

/// Strict `HH:MM`: a config written today must mean the same thing to the
/// next version, so `4:30` and `04:30:00` are refused rather than guessed.
fn parse_hh_mm(s: &str) -> Result<NaiveTime, String> {
    let bytes = s.as_bytes();
    let shape_ok = bytes.len() == 5
        && bytes[2] == b':'
        && [0, 1, 3, 4].iter().all(|&i| bytes[i].is_ascii_digit());
    if !shape_ok {
        return Err(format!("`{s}` is not HH:MM"));
    }
    let (h, m): (u32, u32) = (s[..2].parse().unwrap_or(99), s[3..].parse().unwrap_or(99));
    if h > 23 {
        return Err(format!("hour {h} is out of range 00-23"));
    }
    if m > 59 {
        return Err(format!("minute {m} is out of range 00-59"));
    }
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(|| format!("`{s}` is not a time of day"))
}

/// The zero-padded spelling of a sloppy but unambiguous time (`4:30` →
/// `04:30`), so the error message can suggest exactly what to write.
fn loose_hh_mm(s: &str) -> Option<String> {
    let (h, m) = s.split_once(':')?;
    let valid = |p: &str| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if !valid(h) || !valid(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 23 && m <= 59).then(|| format!("{h:02}:{m:02}"))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "`{s}` is not an interval: write a whole number and a unit, e.g. `every 6h`"
        ));
    }
    let secs_per_unit = match unit {
        "h" | "H" => 3600,
        "m" | "M" => 60,
        "s" | "S" => 1,
        "" => {
            return Err(format!(
                "`{s}` has no unit: write `{s}h`, `{s}m` or `{s}s` (hours, minutes, seconds)"
            ));
        }
        other if other.starts_with('.') || other.starts_with(',') => {
            return Err(format!(
                "`{s}`: the interval must be a whole number; use a smaller unit, e.g. `every 90m` \
                 instead of `every 1.5h`"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}`: the unit must be h, m or s, e.g. `every 24h` \
                 for once a day"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{number}` is too large"))?;
    if n == 0 {
        return Err("the interval must be at least 1, e.g. `every 1h`".into());
    }
    // Keep the interval representable as a chrono TimeDelta; a century is
    // far beyond any sensible backup interval anyway.
    const MAX_SECS: u64 = 100 * 366 * 24 * 3600;
    match n.checked_mul(secs_per_unit) {
        Some(secs) if secs <= MAX_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "`{s}` is too long; the longest interval is 100 years"
        )),
    }
}

/// The canonical spelling. Stored in [`JobState::schedule`] to notice a changed
/// schedule, so it must not depend on how the user spaced or cased it.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |at: &NaiveTime| format!("{:02}:{:02}", at.hour(), at.minute());
        match self {
            Schedule::Daily { at } => write!(f, "daily {}", hm(at)),
            Schedule::Weekly { at } => write!(f, "weekly {}", hm(at)),
            Schedule::Monthly { at } => write!(f, "monthly {}", hm(at)),
            Schedule::Every(d) => {
                let s = d.as_secs();
                if s % 3600 == 0 {
                    write!(f, "every {}h", s / 3600)
                } else if s % 60 == 0 {
                    write!(f, "every {}m", s / 60)
                } else {
                    write!(f, "every {s}s")
                }
            }
            Schedule::Manual => f.write_str("manual"),
        }
    }
}

/// As a string, so a config struct can hold a `Schedule` directly and the TOML
/// deserializer reports a bad value with its file, line and key.
impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the daemon must remember about one job across restarts.
///
/// All instants are UTC so the file means the same after a time-zone change;
/// weekday and day of month are derived in the local zone when needed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct JobState {
    /// When the job was last enabled with its current schedule; `None` while
    /// it is disabled. No calendar slot before this counts as missed, which is
    /// why a job enabled on Friday afternoon does not run at once.
    pub enabled_at: Option<DateTime<Utc>>,
    /// Start of the first scheduled run after `enabled_at` (seed 000): its
    /// local weekday / day of month is where weekly / monthly runs stay.
    /// Kept across restarts; cleared only when the job is (re-)enabled or its
    /// schedule changes.
    pub anchor: Option<DateTime<Utc>>,
    /// Start of the last run, scheduled or on demand. Intervals are measured
    /// from here (seed 004) and a calendar slot counts as done once a run has
    /// started after it.
    pub last_start: Option<DateTime<Utc>>,
    /// End of the last run; older than `last_start` means that run was cut
    /// short (crash, SIGKILL, power loss).
    pub last_end: Option<DateTime<Utc>>,
    /// The last run's outcome as the runner names it (e.g. `success`,
    /// `failure`), for `offsite list` and logs.
    pub last_outcome: Option<String>,
    /// When the "backups are not enabled" notice last went out, so a daemon
    /// restart does not repeat it before 24 hours have passed.
    pub last_not_enabled_notice: Option<DateTime<Utc>>,
    /// Canonical schedule the anchor belongs to: a changed schedule must not
    /// inherit the old one's weekday.
    pub schedule: Option<String>,
}

impl JobState {
    pub fn is_enabled(&self) -> bool {
        self.enabled_at.is_some()
    }

    /// The previous run started but never recorded its end; the daemon should
    /// say so in the log, since that backup is probably missing.
    pub fn interrupted(&self) -> bool {
        match (self.last_start, self.last_end) {
            (Some(start), Some(end)) => end < start,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// What [`reconcile`] changed, so the daemon can log it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    Unchanged,
    /// Newly enabled (or seen enabled for the first time): a new anchor will
    /// be fixed by the next scheduled run.
    Enabled,
    Disabled,
    /// Same enabled job, different schedule: anchor reset as if re-enabled.
    ScheduleChanged,
}

/// Bring a job's state in line with its config. Call for every job at daemon
/// start and after every config reload, before [`next_run`].
///
/// A restart with an unchanged config changes nothing, which is what keeps a
/// weekly job on its weekday instead of moving to the restart's weekday.
pub fn reconcile(
    state: &mut JobState,
    schedule: &Schedule,
    enabled: bool,
    now: DateTime<Utc>,
) -> ConfigChange {
    let canonical = schedule.to_string();
    let was_enabled = state.is_enabled();
    let schedule_changed = state.schedule.as_deref() != Some(canonical.as_str());
    state.schedule = Some(canonical);
    match (was_enabled, enabled) {
        (false, false) => ConfigChange::Unchanged,
        (true, false) => {
            state.enabled_at = None;
            // Nag right away about a freshly disabled job, not 24 h after the
            // last time it was disabled.
            state.last_not_enabled_notice = None;
            ConfigChange::Disabled
        }
        (false, true) => {
            state.enabled_at = Some(now);
            state.anchor = None;
            ConfigChange::Enabled
        }
        (true, true) if schedule_changed => {
            state.enabled_at = Some(now);
            state.anchor = None;
            ConfigChange::ScheduleChanged
        }
        (true, true) => ConfigChange::Unchanged,
    }
}

/// When the job should start next. `None`: never by itself (manual or
/// disabled). A time at or before `now` means "start now"; however many
/// calendar slots were missed while the daemon was down, the answer is one
/// run now, and after that run the schedule continues from the anchor.
///
/// `tz` is the zone the `HH:MM` of calendar schedules is read in. A time that
/// does not exist that day (DST gap) runs at the first valid minute after it;
/// one that occurs twice (DST overlap) runs at the first occurrence only.
pub fn next_run<Tz: TimeZone>(
    schedule: &Schedule,
    state: &JobState,
    now: DateTime<Utc>,
    tz: &Tz,
) -> Option<DateTime<Utc>> {
    let enabled_at = state.enabled_at?;
    // A last start in the future means the clock was set back. Trusting it
    // would silence the job until the clock catches up, so treat it as now.
    let last_start = state.last_start.map(|t| t.min(now));
    let (at, rule) = match schedule {
        Schedule::Manual => return None,
        Schedule::Every(interval) => {
            let interval = TimeDelta::from_std(*interval).ok()?;
            return Some(match last_start {
                None => now,
                Some(t) => t.checked_add_signed(interval)?,
            });
        }
        Schedule::Daily { at } => (*at, DayRule::Any),
        Schedule::Weekly { at } | Schedule::Monthly { at } => {
            let anchor = state
                .anchor
                .filter(|_| state.schedule.as_deref() == Some(schedule.to_string().as_str()));
            let rule = match (schedule, anchor) {
                (_, None) => DayRule::Any,
                (Schedule::Weekly { .. }, Some(a)) => {
                    DayRule::Weekday(a.with_timezone(tz).weekday())
                }
                (_, Some(a)) => DayRule::DayOfMonth(a.with_timezone(tz).day()),
            };
            (*at, rule)
        }
    };
    // The first slot that is not before enabling and after the last start.
    let from = match last_start {
        Some(t) if t > enabled_at => t,
        _ => enabled_at,
    };
    let start_date = from.with_timezone(tz).date_naive().pred_opt()?;
    // Monthly needs at most ~2 months (an anchor day skipped by DST); a year
    // bounds the search without ever being reached for real zones.
    start_date
        .iter_days()
        .take(400)
        .filter(|d| rule.matches(*d))
        .map(|d| slot_on(d, at, tz))
        .find(|slot| *slot >= enabled_at && last_start.is_none_or(|t| *slot > t))
}

#[derive(Clone, Copy, Debug)]
enum DayRule {
    Any,
    Weekday(chrono::Weekday),
    /// Months too short for the day use their last day instead.
    DayOfMonth(u32),
}

impl DayRule {
    fn matches(self, d: NaiveDate) -> bool {
        match self {
            DayRule::Any => true,
            DayRule::Weekday(w) => d.weekday() == w,
            DayRule::DayOfMonth(day) => d.day() == day.min(days_in_month(d)),
        }
    }
}

fn days_in_month(d: NaiveDate) -> u32 {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|first_of_next| first_of_next.pred_opt())
        .map_or(31, |last| last.day())
}

/// The instant `at` means on local date `date`: the earlier of two in an
/// overlap, and in a gap the first minute that exists after it.
fn slot_on<Tz: TimeZone>(date: NaiveDate, at: NaiveTime, tz: &Tz) -> DateTime<Utc> {
    let wanted = date.and_time(at);
    let mut local = wanted;
    // Real gaps are at most a day long (Samoa, 2011); stop well after that.
    for _ in 0..(2 * 24 * 60) {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += TimeDelta::minutes(1);
    }
    Utc.from_utc_datetime(&wanted)
}

/// Which kind of run [`record_start`] is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Started by the daemon because [`next_run`] said so.
    Scheduled,
    /// `offsite run JOB`. Counts as the last run (an interval restarts from
    /// it, a missed slot it follows is not caught up again) but never fixes
    /// the anchor: seed 000 speaks of the automatic backup's first run.
    OnDemand,
}

/// Call when a run starts, and persist the state before running the job, so a
/// crash during a long dump does not start it again at once on restart.
pub fn record_start(
    state: &mut JobState,
    schedule: &Schedule,
    now: DateTime<Utc>,
    trigger: Trigger,
) {
    state.last_start = Some(now);
    let canonical = schedule.to_string();
    if trigger == Trigger::Scheduled
        && state.is_enabled()
        && (state.anchor.is_none() || state.schedule.as_deref() != Some(canonical.as_str()))
    {
        state.anchor = Some(now);
        state.schedule = Some(canonical);
    }
}

/// Call when a run ends, whatever the outcome.
pub fn record_end(state: &mut JobState, now: DateTime<Utc>, outcome: impl Into<String>) {
    state.last_end = Some(now);
    state.last_outcome = Some(outcome.into());
}

/// When the next "not enabled" notice is due for a disabled job (seed 004),
/// `None` for an enabled one. Lets the daemon sleep until then.
pub fn next_not_enabled_notice(state: &JobState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if state.is_enabled() {
        return None;
    }
    Some(match state.last_not_enabled_notice {
        // A notice "sent in the future" means the clock went back; better one
        // notice too many than silence for as long as the clock was off.
        Some(last) if last <= now => last + NOT_ENABLED_NOTICE_EVERY,
        _ => now,
    })
}

pub fn not_enabled_notice_due(state: &JobState, now: DateTime<Utc>) -> bool {
    next_not_enabled_notice(state, now).is_some_and(|t| t <= now)
}

/// Call after the notice went out (or was attempted: a broken notifier must not
/// turn into a notice every loop iteration).
pub fn record_not_enabled_notice(state: &mut JobState, now: DateTime<Utc>) {
    state.last_not_enabled_notice = Some(now);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use chrono::Weekday;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::Tz;

    fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Berlin
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("unambiguous local time")
            .with_timezone(&Utc)
    }

    pub(super) fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn local(t: DateTime<Utc>) -> DateTime<Tz> {
        t.with_timezone(&Berlin)
    }

    pub(super) fn sched(s: &str) -> Schedule {
        s.parse().unwrap()
    }

    pub(super) fn enabled(schedule: &Schedule, at: DateTime<Utc>) -> JobState {
        let mut st = JobState::default();
        assert_eq!(
            reconcile(&mut st, schedule, true, at),
            ConfigChange::Enabled
        );
        st
    }

    pub(super) fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "offsite-schedule-test-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The daemon loop on a fake clock: jump to the next due time, run for a
    /// minute, repeat; returns the start of every run before `until`.
    fn simulate(
        schedule: &Schedule,
        state: &mut JobState,
        mut now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let mut runs = Vec::new();
        for _ in 0..10_000 {
            let Some(next) = next_run(schedule, state, now, &Berlin) else {
                return runs;
            };
            if next > now {
                if next >= until {
                    return runs;
                }
                now = next;
                continue;
            }
            record_start(state, schedule, now, Trigger::Scheduled);
            runs.push(now);
            now += TimeDelta::minutes(1);
            record_end(state, now, "success");
        }
        panic!("simulation did not settle: {runs:?}");
    }

    // 1. Seed 000's example.
    #[test]
    fn weekly_runs_on_weekday_of_first_run_after_enabling() {
        let s = sched("weekly 04:30");
        let enabled_fri = berlin(2026, 11, 20, 15, 0);
        assert_eq!(local(enabled_fri).weekday(), Weekday::Fri);
        let mut st = enabled(&s, enabled_fri);
        let runs = simulate(&s, &mut st, enabled_fri, berlin(2027, 1, 1, 0, 0));
        assert_eq!(runs[0], berlin(2026, 11, 21, 4, 30));
        assert!(runs.len() >= 6, "{runs:?}");
        for (i, r) in runs.iter().take(6).enumerate() {
            let l = local(*r);
            assert_eq!(l.weekday(), Weekday::Sat, "run {i}: {l}");
            assert_eq!((l.hour(), l.minute()), (4, 30), "run {i}: {l}");
            assert_eq!(*r, runs[0] + TimeDelta::weeks(i as i64));
        }
        assert_eq!(local(st.anchor.unwrap()).weekday(), Weekday::Sat);
    }

    // 2. Monthly on the 31st, short months on their last day.
    #[test]
    fn monthly_31st_clamps_to_month_end_and_returns() {
        let s = sched("monthly 04:30");
        let start = berlin(2026, 1, 30, 12, 0);
        let mut st = enabled(&s, start);
        let runs = simulate(&s, &mut st, start, berlin(2027, 1, 1, 0, 0));
        let days: Vec<(u32, u32)> = runs
            .iter()
            .map(|r| (local(*r).month(), local(*r).day()))
            .collect();
        assert_eq!(
            days,
            [
                (1, 31),
                (2, 28),
                (3, 31),
                (4, 30),
                (5, 31),
                (6, 30),
                (7, 31),
                (8, 31),
                (9, 30),
                (10, 31),
                (11, 30),
                (12, 31)
            ]
        );
        assert!(runs.iter().all(|r| local(*r).time() == sched_time(4, 30)));

        let start = berlin(2028, 1, 30, 12, 0);
        let mut st = enabled(&s, start);
        let runs = simulate(&s, &mut st, start, berlin(2028, 4, 1, 0, 0));
        assert_eq!(
            runs,
            [
                berlin(2028, 1, 31, 4, 30),
                berlin(2028, 2, 29, 4, 30),
                berlin(2028, 3, 31, 4, 30)
            ]
        );
    }

    fn sched_time(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    // 3a. Spring forward: 02:30 does not exist on 2026-03-29 in Berlin.
    #[test]
    fn dst_gap_runs_at_first_valid_minute_once() {
        let s = sched("daily 02:30");
        let start = berlin(2026, 3, 27, 12, 0);
        let mut st = enabled(&s, start);
        let runs = simulate(&s, &mut st, start, berlin(2026, 4, 1, 0, 0));
        assert_eq!(
            runs,
            [
                berlin(2026, 3, 28, 2, 30),
                berlin(2026, 3, 29, 3, 0), // 01:00 UTC, the first valid minute
                berlin(2026, 3, 30, 2, 30),
                berlin(2026, 3, 31, 2, 30),
            ]
        );
        assert_eq!(runs[1], utc(2026, 3, 29, 1, 0));
    }

    // 3b. Fall back: 02:30 happens twice on 2026-10-25 in Berlin.
    #[test]
    fn dst_overlap_runs_once_at_first_occurrence() {
        let s = sched("daily 02:30");
        let start = berlin(2026, 10, 23, 12, 0);
        let mut st = enabled(&s, start);
        let runs = simulate(&s, &mut st, start, berlin(2026, 10, 28, 0, 0));
        assert_eq!(
            runs,
            [
                berlin(2026, 10, 24, 2, 30),
                utc(2026, 10, 25, 0, 30), // 02:30 CEST; not again at 01:30 UTC (02:30 CET)
                berlin(2026, 10, 26, 2, 30),
                berlin(2026, 10, 27, 2, 30),
            ]
        );
        // Directly: just before the second 02:30, the next run is tomorrow.
        let mut st = enabled(&s, start);
        record_start(&mut st, &s, utc(2026, 10, 25, 0, 30), Trigger::Scheduled);
        assert_eq!(
            next_run(&s, &st, utc(2026, 10, 25, 1, 29), &Berlin),
            Some(berlin(2026, 10, 26, 2, 30))
        );
    }

    // 4. Seed 004: the interval survives a restart.
    #[test]
    fn interval_measured_from_last_start_across_restart() {
        let s = sched("every 6h");
        let dir = scratch_dir("interval");
        let file = StateFile::in_dir(&dir);
        let now = utc(2026, 5, 1, 12, 0);

        for (ago, expect) in [
            (2, now + TimeDelta::hours(4)),
            (7, now - TimeDelta::hours(1)),
        ] {
            let mut st = enabled(&s, now - TimeDelta::days(3));
            record_start(&mut st, &s, now - TimeDelta::hours(ago), Trigger::Scheduled);
            record_end(
                &mut st,
                now - TimeDelta::hours(ago) + TimeDelta::minutes(5),
                "success",
            );
            file.save(&BTreeMap::from([("db".to_string(), st)]))
                .unwrap();

            // "Restart": fresh load, reconcile, ask.
            let mut jobs = file.load().unwrap();
            let st = jobs.get_mut("db").unwrap();
            assert_eq!(reconcile(st, &s, true, now), ConfigChange::Unchanged);
            let next = next_run(&s, st, now, &Berlin).unwrap();
            assert_eq!(next, expect, "last start {ago} h ago");
            assert_eq!(next <= now, ago >= 6, "run now only once 6 h have passed");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn interval_without_history_runs_at_once() {
        let s = sched("every 30m");
        let now = utc(2026, 5, 1, 12, 0);
        let st = enabled(&s, now);
        assert_eq!(next_run(&s, &st, now, &Berlin), Some(now));
    }

    // 5. Missed slots run once at start, not once per slot.
    #[test]
    fn missed_daily_slots_run_once_then_normal_slot() {
        let s = sched("daily 04:30");
        let mut st = enabled(&s, berlin(2026, 5, 30, 12, 0));
        record_start(&mut st, &s, berlin(2026, 6, 1, 4, 30), Trigger::Scheduled);
        record_end(&mut st, berlin(2026, 6, 1, 4, 40), "success");
        // Down from 2026-06-01 05:00 to 2026-06-04 10:00: slots of 2, 3, 4 June missed.
        let restart = berlin(2026, 6, 4, 10, 0);
        assert!(next_run(&s, &st, restart, &Berlin).unwrap() <= restart);
        let runs = simulate(&s, &mut st, restart, berlin(2026, 6, 6, 0, 0));
        assert_eq!(
            runs,
            [restart, berlin(2026, 6, 5, 4, 30)],
            "one catch-up run, then the normal slot"
        );
    }

    #[test]
    fn missed_weekly_slot_keeps_anchor_weekday() {
        let s = sched("weekly 04:30");
        let mut st = enabled(&s, berlin(2026, 11, 20, 15, 0));
        simulate(
            &s,
            &mut st,
            berlin(2026, 11, 20, 15, 0),
            berlin(2026, 11, 22, 0, 0),
        );
        // Down over the next Saturday, back on Monday: one catch-up run now,
        // then Saturday again.
        let monday = berlin(2026, 11, 30, 9, 0);
        let runs = simulate(&s, &mut st, monday, berlin(2026, 12, 6, 0, 0));
        assert_eq!(runs, [monday, berlin(2026, 12, 5, 4, 30)]);
    }

    // 6. A restart keeps the anchor.
    #[test]
    fn restart_keeps_weekly_anchor() {
        let s = sched("weekly 04:30");
        let enabled_fri = berlin(2026, 11, 20, 15, 0);
        let mut st = enabled(&s, enabled_fri);
        let runs = simulate(&s, &mut st, enabled_fri, berlin(2026, 11, 29, 0, 0));
        assert_eq!(runs.len(), 2, "{runs:?}"); // Sat 21 and Sat 28

        let dir = scratch_dir("restart");
        let file = StateFile::in_dir(&dir);
        file.save(&BTreeMap::from([("calls".to_string(), st)]))
            .unwrap();

        let tuesday = berlin(2026, 12, 1, 10, 0);
        assert_eq!(local(tuesday).weekday(), Weekday::Tue);
        let mut jobs = file.load().unwrap();
        let st = jobs.get_mut("calls").unwrap();
        assert_eq!(reconcile(st, &s, true, tuesday), ConfigChange::Unchanged);
        assert_eq!(
            next_run(&s, st, tuesday, &Berlin),
            Some(berlin(2026, 12, 5, 4, 30))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reenabling_or_changing_schedule_fixes_a_new_anchor() {
        let s = sched("weekly 04:30");
        let fri = berlin(2026, 11, 20, 15, 0);
        let mut st = enabled(&s, fri);
        simulate(&s, &mut st, fri, berlin(2026, 11, 22, 0, 0));

        // Disabled, then enabled again on Tuesday: Wednesdays from now on.
        let mut off = st.clone();
        assert_eq!(
            reconcile(&mut off, &s, false, berlin(2026, 11, 23, 9, 0)),
            ConfigChange::Disabled
        );
        assert_eq!(
            next_run(&s, &off, berlin(2026, 11, 23, 9, 0), &Berlin),
            None
        );
        let tue = berlin(2026, 11, 24, 10, 0);
        assert_eq!(reconcile(&mut off, &s, true, tue), ConfigChange::Enabled);
        let runs = simulate(&s, &mut off, tue, berlin(2026, 12, 3, 0, 0));
        assert_eq!(
            runs,
            [berlin(2026, 11, 25, 4, 30), berlin(2026, 12, 2, 4, 30)]
        );

        // Time changed on Tuesday: the old Saturday anchor is dropped too.
        let s2 = sched("weekly 05:00");
        assert_eq!(
            reconcile(&mut st, &s2, true, tue),
            ConfigChange::ScheduleChanged
        );
        let runs = simulate(&s2, &mut st, tue, berlin(2026, 12, 3, 0, 0));
        assert_eq!(
            runs,
            [berlin(2026, 11, 25, 5, 0), berlin(2026, 12, 2, 5, 0)]
        );

        // Same schedule spelled differently is not a change.
        let same: Schedule = "  Weekly   05:00 ".parse().unwrap();
        assert_eq!(
            reconcile(&mut st, &same, true, tue),
            ConfigChange::Unchanged
        );
    }

    #[test]
    fn on_demand_run_counts_as_last_run_but_not_as_anchor() {
        let s = sched("weekly 04:30");
        let fri = berlin(2026, 11, 20, 15, 0);
        let mut st = enabled(&s, fri);
        record_start(&mut st, &s, berlin(2026, 11, 20, 16, 0), Trigger::OnDemand);
        assert_eq!(st.anchor, None);
        let runs = simulate(
            &s,
            &mut st,
            berlin(2026, 11, 20, 17, 0),
            berlin(2026, 12, 1, 0, 0),
        );
        assert_eq!(
            runs,
            [berlin(2026, 11, 21, 4, 30), berlin(2026, 11, 28, 4, 30)]
        );
    }

    #[test]
    fn clock_set_back_does_not_silence_the_job() {
        let s = sched("every 1h");
        let now = utc(2026, 5, 1, 12, 0);
        let mut st = enabled(&s, now - TimeDelta::days(400));
        record_start(&mut st, &s, now + TimeDelta::days(365), Trigger::Scheduled);
        assert_eq!(
            next_run(&s, &st, now, &Berlin),
            Some(now + TimeDelta::hours(1))
        );
        let d = sched("daily 04:30");
        assert_eq!(
            next_run(&d, &st, now, &Berlin),
            Some(berlin(2026, 5, 2, 4, 30))
        );
    }

    #[test]
    fn manual_and_disabled_never_run_by_themselves() {
        let now = utc(2026, 5, 1, 12, 0);
        let m = sched("manual");
        assert_eq!(next_run(&m, &enabled(&m, now), now, &Berlin), None);
        let mut st = JobState::default();
        let d = sched("every 1h");
        assert_eq!(reconcile(&mut st, &d, false, now), ConfigChange::Unchanged);
        assert_eq!(next_run(&d, &st, now, &Berlin), None);
    }

    #[test]
    fn disabled_job_nags_every_24_hours_across_restarts() {
        let s = sched("daily 04:30");
        let t0 = utc(2026, 5, 1, 12, 0);
        let mut st = JobState::default();
        reconcile(&mut st, &s, false, t0);
        assert!(not_enabled_notice_due(&st, t0));
        record_not_enabled_notice(&mut st, t0);
        assert!(!not_enabled_notice_due(&st, t0 + TimeDelta::hours(23)));
        assert_eq!(
            next_not_enabled_notice(&st, t0),
            Some(t0 + TimeDelta::hours(24))
        );
        assert!(not_enabled_notice_due(&st, t0 + TimeDelta::hours(24)));
        // A restart with the job still disabled does not nag early.
        assert_eq!(
            reconcile(&mut st, &s, false, t0 + TimeDelta::hours(1)),
            ConfigChange::Unchanged
        );
        assert!(!not_enabled_notice_due(&st, t0 + TimeDelta::hours(2)));
        // Enabled: no nagging; disabled again: nag at once.
        reconcile(&mut st, &s, true, t0 + TimeDelta::hours(3));
        assert!(!not_enabled_notice_due(&st, t0 + TimeDelta::hours(30)));
        reconcile(&mut st, &s, false, t0 + TimeDelta::hours(4));
        assert!(not_enabled_notice_due(&st, t0 + TimeDelta::hours(4)));
    }

    #[test]
    fn interrupted_run_is_reported() {
        let s = sched("every 1h");
        let t = utc(2026, 5, 1, 12, 0);
        let mut st = enabled(&s, t);
        assert!(!st.interrupted());
        record_start(&mut st, &s, t, Trigger::Scheduled);
        assert!(st.interrupted());
        record_end(&mut st, t + TimeDelta::minutes(1), "failure");
        assert!(!st.interrupted());
        record_start(&mut st, &s, t + TimeDelta::hours(1), Trigger::Scheduled);
        assert!(st.interrupted());
    }

    // 7. Parser.
    #[test]
    fn parses_every_accepted_form() {
        let t = sched_time(4, 30);
        assert_eq!(sched("daily 04:30"), Schedule::Daily { at: t });
        assert_eq!(sched("weekly 04:30"), Schedule::Weekly { at: t });
        assert_eq!(
            sched("monthly 23:59"),
            Schedule::Monthly {
                at: sched_time(23, 59)
            }
        );
        assert_eq!(
            sched("daily 00:00"),
            Schedule::Daily {
                at: sched_time(0, 0)
            }
        );
        assert_eq!(
            sched("every 6h"),
            Schedule::Every(Duration::from_secs(6 * 3600))
        );
        assert_eq!(
            sched("every 30m"),
            Schedule::Every(Duration::from_secs(30 * 60))
        );
        assert_eq!(sched("every 2s"), Schedule::Every(Duration::from_secs(2)));
        assert_eq!(sched("manual"), Schedule::Manual);
        assert_eq!(sched(" Weekly  04:30 "), Schedule::Weekly { at: t });
        for s in [
            "daily 04:30",
            "weekly 00:05",
            "monthly 12:00",
            "every 6h",
            "every 30m",
            "every 2s",
            "every 90m",
            "manual",
        ] {
            assert_eq!(sched(s).to_string(), s, "canonical form round-trips");
        }
    }

    #[test]
    fn rejects_bad_forms_saying_what_is_wrong_and_what_is_accepted() {
        let cases = [
            (
                "weekly 4:3",
                "`weekly 4:3`: `4:3` is not HH:MM; the time must be HH:MM (24-hour), e.g. \
                 `weekly 04:03`",
            ),
            (
                "daily 4:30",
                "`daily 4:30`: `4:30` is not HH:MM; the time must be HH:MM (24-hour), e.g. \
                 `daily 04:30`",
            ),
            (
                "daily 24:00",
                "`daily 24:00`: hour 24 is out of range 00-23; the time must be HH:MM \
                 (24-hour), e.g. `daily 04:30`",
            ),
            (
                "monthly 12:60",
                "`monthly 12:60`: minute 60 is out of range 00-59",
            ),
            (
                "daily",
                "`daily`: `daily` needs a start time, e.g. `daily 04:30`",
            ),
            (
                "daily 04:30 UTC",
                "unexpected `UTC` after the time; write only `daily HH:MM` (times are in the \
                 machine's local time zone)",
            ),
            ("hourly", "`hourly`: unknown schedule kind `hourly`"),
            ("", "``: the schedule is empty"),
            ("every 6", "`6` has no unit: write `6h`, `6m` or `6s`"),
            (
                "every 2d",
                "unknown unit `d` in `2d`: the unit must be h, m or s",
            ),
            ("every 0m", "the interval must be at least 1"),
            ("every 1.5h", "the interval must be a whole number"),
            (
                "every 6 h",
                "write the interval as one word without spaces, e.g. `every 6h`",
            ),
            ("every h", "`h` is not an interval"),
            ("every", "`every` needs an interval"),
            ("every 99999999999999999999h", "is too large"),
            ("every 999999999h", "is too long"),
            ("manual 04:30", "`manual` takes nothing after it"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Schedule>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(expected), "{input:?}: {msg}");
            assert!(
                msg.ends_with(&format!("; accepted schedules: {ACCEPTED_SCHEDULES}")),
                "{input:?}: {msg}"
            );
            assert_eq!(err.input, input);
        }
    }

    #[test]
    fn deserializes_from_config_strings() {
        #[derive(Deserialize)]
        struct Job {
            schedule: Schedule,
        }
        let job: Job = serde_json::from_str(r#"{"schedule":"weekly 04:30"}"#).unwrap();
        assert_eq!(job.schedule, sched("weekly 04:30"));
        let err = serde_json::from_str::<Job>(r#"{"schedule":"weekly 4:3"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("accepted schedules"), "{err}");
        assert_eq!(
            serde_json::to_string(&sched("every 6h")).unwrap(),
            r#""every 6h""#
        );
    }
}
