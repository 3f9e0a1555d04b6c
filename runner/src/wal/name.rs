//! WAL positions and the names PostgreSQL gives archived files.
//!
//! An LSN is a 64-bit byte position in the WAL stream, written `X/X` (high
//! and low 32 bits in hex). A segment file is named by its timeline and its
//! segment number: `TTTTTTTT` `LLLLLLLL` `SSSSSSSS` (24 hex digits), where
//! the segment number is `LLLLLLLL * (4 GiB / segment size) + SSSSSSSS`
//! (PostgreSQL's `XLogFileName`, src/include/access/xlog_internal.h).

use std::fmt;
use std::str::FromStr;

/// A WAL position (`pg_lsn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;

    /// `16/B374D848`: two groups of 1–8 hex digits.
    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad =
            || format!("`{s}` is not a WAL position: expected two hex numbers like 0/16B3748");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(bad());
            }
            u32::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Lsn(((part(hi)? as u64) << 32) | part(lo)? as u64))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The default WAL segment size (initdb `--wal-segsize`, MiB 1..1024).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// One segment: timeline and segment number, for a given segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    pub timeline: u32,
    pub segno: u64,
}

impl SegmentId {
    /// The segment holding `lsn` on `timeline`.
    pub fn containing(timeline: u32, lsn: Lsn, seg_size: u64) -> SegmentId {
        SegmentId {
            timeline,
            segno: lsn.0 / seg_size,
        }
    }

    /// Its first byte's position.
    pub fn start(self, seg_size: u64) -> Lsn {
        Lsn(self.segno * seg_size)
    }

    pub fn next(self) -> SegmentId {
        SegmentId {
            segno: self.segno + 1,
            ..self
        }
    }

    /// The 24-hex-digit file name.
    pub fn file_name(self, seg_size: u64) -> String {
        let per = 0x1_0000_0000 / seg_size;
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.segno / per,
            self.segno % per
        )
    }

    /// Parses a 24-hex-digit segment name (no suffix).
    pub fn parse(name: &str, seg_size: u64) -> Option<SegmentId> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let n = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).ok();
        let (tli, log, seg) = (n(0..8)?, n(8..16)? as u64, n(16..24)? as u64);
        let per = 0x1_0000_0000 / seg_size;
        (seg < per).then_some(SegmentId {
            timeline: tli,
            segno: log * per + seg,
        })
    }
}

/// What `archive_command` may be handed (`%f`), by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalFileKind {
    /// `000000010000000000000003`: 16 MiB (by default) of WAL.
    Segment,
    /// `000000010000000000000003.partial`: the last, incomplete segment of
    /// an old timeline, archived at promotion.
    Partial,
    /// `00000002.history`: a timeline's ancestry, written at promotion.
    History,
    /// `000000010000000000000003.00000028.backup`: a base backup's label.
    BackupLabel,
}

/// Classifies an archived file name; `None` for anything PostgreSQL would
/// not archive (so a mistyped `%p` is refused, not stored).
pub fn kind_of(name: &str) -> Option<WalFileKind> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if hex(name, 24) {
        return Some(WalFileKind::Segment);
    }
    if let Some(stem) = name.strip_suffix(".partial") {
        return hex(stem, 24).then_some(WalFileKind::Partial);
    }
    if let Some(stem) = name.strip_suffix(".history") {
        return hex(stem, 8).then_some(WalFileKind::History);
    }
    if let Some(stem) = name.strip_suffix(".backup") {
        let (seg, off) = stem.split_once('.')?;
        return (hex(seg, 24) && hex(off, 8)).then_some(WalFileKind::BackupLabel);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_and_refuses_junk() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        for bad in ["", "12", "0/", "/1", "G/1", "123456789/0", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_names_follow_xlogfilename() {
        let seg = DEFAULT_SEGMENT_SIZE;
        let id = SegmentId::containing(1, "1/2A000028".parse().unwrap(), seg);
        assert_eq!(id.file_name(seg), "00000001000000010000002A");
        assert_eq!(SegmentId::parse("00000001000000010000002A", seg), Some(id));
        assert_eq!(id.start(seg), "1/2A000000".parse().unwrap());
        assert_eq!(id.next().file_name(seg), "00000001000000010000002B");
        let last = SegmentId::parse("0000000100000001000000FF", seg).unwrap();
        assert_eq!(last.next().file_name(seg), "000000010000000200000000");
        // 0x100 is past the last segment of a 4 GiB "log" at 16 MiB.
        assert_eq!(SegmentId::parse("000000010000000100000100", seg), None);
        // 64 MiB segments: 64 per log.
        let big = 64 << 20;
        let id = SegmentId::parse("00000002000000030000003F", big).unwrap();
        assert_eq!(id.segno, 3 * 64 + 63);
    }

    #[test]
    fn archived_file_kinds() {
        assert_eq!(
            kind_of("000000010000000000000003"),
            Some(WalFileKind::Segment)
        );
        assert_eq!(kind_of("00000002.history"), Some(WalFileKind::History));
        assert_eq!(
            kind_of("000000010000000000000003.00000028.backup"),
            Some(WalFileKind::BackupLabel)
        );
        assert_eq!(
            kind_of("000000010000000000000003.partial"),
            Some(WalFileKind::Partial)
        );
        for bad in [
            "postgresql.conf",
            "00000001000000000000003",
            "../00000002.history",
            "",
        ] {
            assert_eq!(kind_of(bad), None, "{bad}");
        }
    }
}
