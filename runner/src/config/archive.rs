//! The keys of a `source = "archive"` job (seed 003): `volume_size`,
//! `seal_after`, `archive_keep`, `archive_lag`, one small parser each.
//! [`crate::archive`] reads the resulting [`ArchiveSpec`].

use std::time::Duration;

use toml::Spanned;

use super::error::Ctx;
use super::raw::RawJob;
use crate::limits::{DurationRange, parse_size};

/// The settings of a `source = "archive"` job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSpec {
    /// Bytes (compressed) at which the open volume is sealed; default 4 GiB.
    pub volume_size: u64,
    /// A volume is sealed once its oldest member has waited this long
    /// (default 6 h).
    pub seal_after: Duration,
    /// A volume goes once every member is older than this (None = kept forever).
    pub archive_keep: Option<Duration>,
    /// The `archive-lag` notice fires when the oldest file not yet at any
    /// destination has waited longer than this (default: 2 × seal_after).
    pub archive_lag: Duration,
}

/// Smallest accepted `volume_size`: a volume holds a tar header, a seek
/// table and its catalog slice besides the members.
pub const VOLUME_SIZE_MIN: u64 = 1 << 20;
/// Largest accepted `volume_size` (a volume is fetched whole into a cache
/// bounded to twice this when a destination has no ranged read).
pub const VOLUME_SIZE_MAX: u64 = 1 << 40;
const VOLUME_SIZE_DEFAULT: u64 = 4 << 30;
const SEAL_AFTER_DEFAULT: Duration = Duration::from_secs(6 * 3600);

const YEAR: u64 = 366 * 86400;

/// `seal_after`: how long a member may wait in the open volume.
pub const SEAL_AFTER: DurationRange = DurationRange {
    key: "seal_after",
    min: Duration::from_secs(1),
    max: Duration::from_secs(YEAR),
};
/// `archive_keep`: content age past which a volume may go.
pub const ARCHIVE_KEEP: DurationRange = DurationRange {
    key: "archive_keep",
    min: Duration::from_secs(1),
    max: Duration::from_secs(100 * YEAR),
};
/// `archive_lag`: the age of the oldest unprotected file that is noticed.
pub const ARCHIVE_LAG: DurationRange = DurationRange {
    key: "archive_lag",
    min: Duration::from_secs(1),
    max: Duration::from_secs(YEAR),
};

/// The four archive keys of `raw`; `key(name)` is `jobs.NAME.name`.
pub(super) fn archive_spec(
    cx: &mut Ctx,
    key: impl Fn(&str) -> String,
    raw: &RawJob,
) -> ArchiveSpec {
    let volume_size = match &raw.volume_size {
        None => VOLUME_SIZE_DEFAULT,
        Some(v) => volume_size(v.get_ref()).unwrap_or_else(|e| {
            cx.at(v, &key("volume_size"), e);
            VOLUME_SIZE_DEFAULT
        }),
    };
    let seal_after =
        duration(cx, &key, &SEAL_AFTER, raw.seal_after.as_ref()).unwrap_or(SEAL_AFTER_DEFAULT);
    let archive_keep = duration(cx, &key, &ARCHIVE_KEEP, raw.archive_keep.as_ref());
    let archive_lag =
        duration(cx, &key, &ARCHIVE_LAG, raw.archive_lag.as_ref()).unwrap_or(seal_after * 2);
    ArchiveSpec {
        volume_size,
        seal_after,
        archive_keep,
        archive_lag,
    }
}

/// The archive keys set in `raw`, with their values' spans (for "only used
/// with source = \"archive\"").
pub(super) fn archive_keys(raw: &RawJob) -> [(&'static str, Option<&Spanned<String>>); 4] {
    [
        ("volume_size", raw.volume_size.as_ref()),
        ("seal_after", raw.seal_after.as_ref()),
        ("archive_keep", raw.archive_keep.as_ref()),
        ("archive_lag", raw.archive_lag.as_ref()),
    ]
}

/// `volume_size`: a size from 1 MiB to 1 TiB.
fn volume_size(text: &str) -> Result<u64, String> {
    match parse_size(text).map(|n| n as u64) {
        Some(n) if (VOLUME_SIZE_MIN..=VOLUME_SIZE_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a volume size from 1MiB to 1TiB; write e.g. \"4GiB\" or \"700MiB\""
        )),
    }
}

/// A duration key within `range`; an error is reported and gives `None`.
fn duration(
    cx: &mut Ctx,
    key: &impl Fn(&str) -> String,
    range: &DurationRange,
    v: Option<&Spanned<String>>,
) -> Option<Duration> {
    let v = v?;
    match range.parse(v.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            cx.at(v, &key(range.key), e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_size_takes_units_and_refuses_too_small_or_too_large() {
        assert_eq!(volume_size("8MiB"), Ok(8 << 20));
        assert_eq!(volume_size("4GiB"), Ok(4 << 30));
        assert_eq!(volume_size("1048576"), Ok(1 << 20));
        for bad in ["512KiB", "2TiB", "4 gigs", "", "-1GiB"] {
            let e = volume_size(bad).unwrap_err();
            assert!(e.contains("from 1MiB to 1TiB"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_are_checked_against_their_ranges() {
        assert_eq!(SEAL_AFTER.parse("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(
            ARCHIVE_KEEP.parse("400d"),
            Ok(Duration::from_secs(400 * 86400))
        );
        assert_eq!(ARCHIVE_LAG.parse("1s"), Ok(Duration::from_secs(1)));
        assert!(SEAL_AFTER.parse("0s").unwrap_err().contains("out of range"));
        assert!(
            SEAL_AFTER
                .parse("400d")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(ARCHIVE_LAG.parse("soon").is_err());
        assert!(
            ARCHIVE_KEEP
                .parse("200000d")
                .unwrap_err()
                .contains("out of range")
        );
    }
}
