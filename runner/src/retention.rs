//! Which copies of a job's generations rotation keeps, locally and at each
//! destination, and why. A pure plan: `ship::retain` carries it out and
//! `offsite list` shows its reasons.
//!
//! The rules (README, "Retention"):
//! * Counted: good generations stamped no later than now (plus
//!   [`FUTURE_SLACK`](crate::store::FUTURE_SLACK)). One stamped later was
//!   made with a wrong clock: flagged, never counted, never rotated out.
//! * Local: the newest `keep` counted generations stay. An older good one
//!   stays while a destination of the job still needs it — not confirmed
//!   there, and fewer than `keep` newer good copies confirmed there.
//!   `max_local` bounds the good generations kept: past it the oldest held
//!   one goes anyway, as a forced drop (an error and a notice).
//! * Bad (failed verification): at most `keep` kept, oldest dropped first;
//!   also dropped once `keep` newer good ones exist. Never counted.
//! * At a destination: a good copy confirmed there is removed only once
//!   `keep` newer good copies are confirmed *there*, so a failing
//!   destination keeps what it has. A bad copy goes with its local one.
//! * A pending upload is superseded (never shipped) once `keep` newer good
//!   copies are confirmed at that destination.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::store::{Manifest, UploadState};

/// One generation as rotation sees it: its manifest, and whether its data
/// file is still on local disk (else only copies at destinations remain).
#[derive(Clone, Copy)]
pub struct Item<'a> {
    pub manifest: &'a Manifest,
    pub local: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalFate {
    /// Stays; the reason.
    Keep(String),
    /// Stays although older than the newest `keep`: a destination lacks it.
    Held(String),
    Drop(String),
    /// Dropped by the `max_local` limit although a destination lacks it.
    Forced(String),
    /// No local copy.
    Gone,
}

impl LocalFate {
    pub fn drops(&self) -> bool {
        matches!(self, LocalFate::Drop(_) | LocalFate::Forced(_))
    }

    pub fn reason(&self) -> &str {
        match self {
            LocalFate::Keep(r) | LocalFate::Held(r) | LocalFate::Drop(r) | LocalFate::Forced(r) => {
                r
            }
            LocalFate::Gone => "no local copy",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteFate {
    /// Confirmed there and stays.
    Keep(String),
    /// Confirmed there; rotation removes it now.
    Remove(String),
    /// Not there yet and wanted: shipped at the next chance.
    Ship(String),
    /// Not there and no longer wanted.
    Superseded(String),
    /// Nothing to do (removed earlier, or no local copy left to ship).
    Nothing(String),
}

impl RemoteFate {
    pub fn reason(&self) -> &str {
        match self {
            RemoteFate::Keep(r)
            | RemoteFate::Remove(r)
            | RemoteFate::Ship(r)
            | RemoteFate::Superseded(r)
            | RemoteFate::Nothing(r) => r,
        }
    }
}

/// What rotation does with one generation.
#[derive(Clone, Debug)]
pub struct Fate {
    pub future: bool,
    pub local: LocalFate,
    /// Per destination named in its manifest.
    pub remote: BTreeMap<String, RemoteFate>,
}

/// Counts behind the rules, per item (items are oldest first).
struct Counts {
    future: Vec<bool>,
    counted: Vec<bool>,
    /// Counted generations newer than the item.
    newer_good: Vec<usize>,
    /// Bad (not future) generations newer than the item.
    newer_bad: Vec<usize>,
}

fn counts(items: &[Item], now: DateTime<Utc>) -> Counts {
    let future: Vec<bool> = items.iter().map(|i| i.manifest.is_future(now)).collect();
    let counted: Vec<bool> = items
        .iter()
        .zip(&future)
        .map(|(i, f)| i.manifest.is_good() && !f)
        .collect();
    let n = items.len();
    let (mut newer_good, mut newer_bad) = (vec![0; n], vec![0; n]);
    let (mut g, mut b) = (0, 0);
    for i in (0..n).rev() {
        newer_good[i] = g;
        newer_bad[i] = b;
        if counted[i] {
            g += 1;
        } else if !future[i] {
            b += 1;
        }
    }
    Counts {
        future,
        counted,
        newer_good,
        newer_bad,
    }
}

/// Good copies confirmed at `dest` that are newer than item `i`, with
/// `extra` counted as confirmed too (uploads done earlier in this run).
pub fn newer_confirmed(
    items: &[Item],
    dest: &str,
    i: usize,
    now: DateTime<Utc>,
    extra: &[usize],
) -> usize {
    items
        .iter()
        .enumerate()
        .skip(i + 1)
        .filter(|(j, it)| {
            it.manifest.is_good()
                && !it.manifest.is_future(now)
                && (it.manifest.done_at(dest) || extra.contains(j))
        })
        .count()
}

/// The plan for `items` (oldest first, by name). `dests` are the job's
/// destinations: only they hold a local generation back. `slack` good
/// generations may stand over `max_local` (1 before a run ships its new
/// one, 0 after).
pub fn plan(
    items: &[Item],
    dests: &[String],
    keep: usize,
    (max_local, slack): (usize, usize),
    now: DateTime<Utc>,
) -> Vec<Fate> {
    let keep = keep.max(1);
    let c = counts(items, now);
    let mut fates: Vec<Fate> = (0..items.len())
        .map(|i| {
            let remote = remote_fates(items, i, &c, keep, now);
            Fate {
                future: c.future[i],
                local: local_fate(&items[i], i, &c, keep, dests, &remote),
                remote,
            }
        })
        .collect();
    bound_local(&mut fates, &c, max_local + slack, max_local);
    drop_bad_copies(&mut fates, &c);
    fates
}

/// Item `i`'s fate at each destination it was meant for.
fn remote_fates(
    items: &[Item],
    i: usize,
    c: &Counts,
    keep: usize,
    now: DateTime<Utc>,
) -> BTreeMap<String, RemoteFate> {
    let it = &items[i];
    let mut remote = BTreeMap::new();
    for (d, st) in &it.manifest.uploads {
        let newer = newer_confirmed(items, d, i, now, &[]);
        let fate = match st.state {
            UploadState::Done if c.future[i] => {
                RemoteFate::Keep("stamped in the future: not counted, never rotated out".into())
            }
            UploadState::Done if !c.counted[i] => {
                RemoteFate::Keep("bad: kept while its local copy is".into())
            }
            UploadState::Done if newer >= keep => RemoteFate::Remove(format!(
                "{newer} newer good copies are confirmed at {d} (keep = {keep})"
            )),
            UploadState::Done => RemoteFate::Keep(format!(
                "one of the newest {keep} good copies confirmed at {d}"
            )),
            UploadState::Pending if !it.local => {
                RemoteFate::Nothing("never arrived, and no local copy is left".into())
            }
            UploadState::Pending if !c.future[i] && newer >= keep => RemoteFate::Superseded(
                format!("{newer} newer good copies are confirmed at {d}: not shipped"),
            ),
            UploadState::Pending => RemoteFate::Ship(match &st.last_error {
                Some(e) => format!("not there yet (last attempt: {e})"),
                None => "not there yet".into(),
            }),
            UploadState::Superseded => {
                RemoteFate::Superseded("newer copies were shipped there instead".into())
            }
            UploadState::Removed => RemoteFate::Nothing("removed by rotation".into()),
        };
        remote.insert(d.clone(), fate);
    }
    remote
}

/// Item `i`'s local fate, given its fates at the destinations.
fn local_fate(
    it: &Item,
    i: usize,
    c: &Counts,
    keep: usize,
    dests: &[String],
    remote: &BTreeMap<String, RemoteFate>,
) -> LocalFate {
    if !it.local {
        LocalFate::Gone
    } else if c.future[i] {
        LocalFate::Keep(format!(
            "stamped {} (in the future: made with a wrong clock): not counted, \
             never rotated out; check it and delete it by hand",
            it.manifest.started.format("%Y-%m-%d %H:%M:%SZ")
        ))
    } else if c.counted[i] && c.newer_good[i] < keep {
        LocalFate::Keep(format!("one of the newest {keep} good generations"))
    } else if c.counted[i] {
        let lacking: Vec<&str> = dests
            .iter()
            .filter(|d| matches!(remote.get(*d), Some(RemoteFate::Ship(_))))
            .map(String::as_str)
            .collect();
        if lacking.is_empty() {
            LocalFate::Drop(format!(
                "{} newer good generations (keep = {keep}); every destination has it or a newer copy",
                c.newer_good[i]
            ))
        } else {
            LocalFate::Held(format!(
                "held: not yet at {}, which holds fewer than {keep} newer good copies",
                lacking.join(", ")
            ))
        }
    } else if c.newer_good[i] >= keep {
        LocalFate::Drop(format!(
            "bad; {} newer good generations exist",
            c.newer_good[i]
        ))
    } else if c.newer_bad[i] >= keep {
        LocalFate::Drop(format!(
            "bad; the newest {keep} bad generations are kept for inspection, this one is older"
        ))
    } else {
        LocalFate::Keep(format!(
            "bad: kept for inspection (at most {keep} bad generations)"
        ))
    }
}

/// The operator's bound on local space: past `bound` good generations
/// kept, the oldest held ones go first (forced; `max_local` as configured).
fn bound_local(fates: &mut [Fate], c: &Counts, bound: usize, max_local: usize) {
    let kept_good = (0..fates.len())
        .filter(|&i| {
            c.counted[i] && matches!(fates[i].local, LocalFate::Keep(_) | LocalFate::Held(_))
        })
        .count();
    let mut over = kept_good.saturating_sub(bound);
    for f in fates.iter_mut() {
        if over == 0 {
            break;
        }
        if let LocalFate::Held(why) = &f.local {
            f.local = LocalFate::Forced(format!(
                "max_local = {max_local} good generations reached: dropped although {}",
                why.trim_start_matches("held: ")
            ));
            over -= 1;
        }
    }
}

/// A bad copy at a destination goes with its local one.
fn drop_bad_copies(fates: &mut [Fate], c: &Counts) {
    for (i, f) in fates.iter_mut().enumerate() {
        if c.counted[i] || c.future[i] || !(f.local.drops() || f.local == LocalFate::Gone) {
            continue;
        }
        for (d, r) in f.remote.iter_mut() {
            if matches!(r, RemoteFate::Keep(_)) {
                *r = RemoteFate::Remove(format!("bad, and its local copy is dropped ({d})"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Health, UploadStatus};

    fn m(name: &str, good: bool, dests: &[(&str, UploadState)]) -> Manifest {
        let started: DateTime<Utc> = format!("2026-01-01T00:{name}:00Z").parse().unwrap();
        serde_json::from_value(serde_json::json!({
            "version": 1, "job": "j", "name": format!("j-{name}"),
            "started": started, "finished": started, "size": 1, "sha256": "",
            "source": "files", "layout": "tar", "compression": {"algorithm": "none"},
            "globals_included": false,
            "health": if good { Health::Good } else { Health::Bad },
            "uploads": dests.iter().map(|(d, s)| (d.to_string(), UploadStatus {
                state: s.clone(), attempts: 1, last_error: None, at: None,
            })).collect::<BTreeMap<_, _>>(),
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> DateTime<Utc> {
        "2026-01-02T00:00:00Z".parse().unwrap()
    }

    fn drops(f: &[Fate]) -> Vec<usize> {
        (0..f.len()).filter(|&i| f[i].local.drops()).collect()
    }

    use UploadState::{Done, Pending};

    /// Every one on local disk.
    fn local(ms: &[Manifest]) -> Vec<Item<'_>> {
        ms.iter()
            .map(|m| Item {
                manifest: m,
                local: true,
            })
            .collect()
    }

    #[test]
    fn a_failing_destination_keeps_what_it_has_and_missing_ones_are_held() {
        // v1, v2 shipped; v3..v5 failed to arrive.
        let ms = [
            m("01", true, &[("d", Done)]),
            m("02", true, &[("d", Done)]),
            m("03", true, &[("d", Pending)]),
            m("04", true, &[("d", Pending)]),
            m("05", true, &[("d", Pending)]),
        ];
        let items = local(&ms);
        let f = plan(&items, &["d".into()], 2, (4, 0), now());
        for i in 0..2 {
            assert!(
                matches!(f[i].remote["d"], RemoteFate::Keep(_)),
                "{i}: {f:?}"
            );
            assert!(matches!(f[i].local, LocalFate::Drop(_)), "{i}: {f:?}");
        }
        assert!(matches!(f[2].local, LocalFate::Held(_)), "{f:?}");
        assert!(matches!(f[3].local, LocalFate::Keep(_)));
        // A tighter limit forces the held one out, as a forced drop.
        let f = plan(&items, &["d".into()], 2, (2, 0), now());
        assert!(matches!(f[2].local, LocalFate::Forced(_)), "{f:?}");
        assert_eq!(drops(&f), vec![0, 1, 2]);
    }

    #[test]
    fn a_copy_goes_from_a_destination_only_once_keep_newer_are_confirmed_there() {
        let ms = [
            m("01", true, &[("d", Done)]),
            m("02", true, &[("d", Done)]),
            m("03", true, &[("d", Done)]),
            m("04", true, &[("d", Pending)]),
        ];
        let items = local(&ms);
        let f = plan(&items, &["d".into()], 2, (4, 0), now());
        assert!(matches!(f[0].remote["d"], RemoteFate::Remove(_)), "{f:?}");
        assert!(matches!(f[1].remote["d"], RemoteFate::Keep(_)), "{f:?}");
        assert!(matches!(f[3].remote["d"], RemoteFate::Ship(_)));
    }

    #[test]
    fn pending_uploads_superseded_beyond_keep_are_not_shipped_nor_held() {
        let ms = [
            m("01", true, &[("d", Pending)]),
            m("02", true, &[("d", Pending)]),
            m("03", true, &[("d", Done)]),
            m("04", true, &[("d", Done)]),
        ];
        let items = local(&ms);
        let f = plan(&items, &["d".into()], 2, (4, 0), now());
        assert!(
            matches!(f[0].remote["d"], RemoteFate::Superseded(_)),
            "{f:?}"
        );
        assert_eq!(drops(&f), vec![0, 1]);
    }

    #[test]
    fn bad_generations_are_bounded_by_keep_and_never_push_out_good_ones() {
        let ms = [
            m("01", true, &[]),
            m("02", false, &[]),
            m("03", false, &[]),
            m("04", false, &[]),
            m("05", false, &[]),
        ];
        let items = local(&ms);
        let f = plan(&items, &[], 2, (4, 0), now());
        assert_eq!(drops(&f), vec![1, 2], "{f:?}");
        assert!(
            matches!(f[0].local, LocalFate::Keep(_)),
            "the good one stays"
        );
    }

    #[test]
    fn a_future_generation_is_not_counted_and_not_dropped() {
        let mut future = m("09", true, &[]);
        future.started = "2043-01-01T00:00:00Z".parse().unwrap();
        future.name = "j-2043".into();
        let ms = [
            m("01", true, &[]),
            m("02", true, &[]),
            m("03", true, &[]),
            future,
        ];
        let items = local(&ms);
        let f = plan(&items, &[], 2, (4, 0), now());
        assert_eq!(drops(&f), vec![0], "{f:?}");
        assert!(f[3].future);
        assert!(matches!(f[1].local, LocalFate::Keep(_)));
    }
}
