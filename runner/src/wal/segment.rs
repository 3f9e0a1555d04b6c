//! Reading a WAL segment: its long page header (which cluster, timeline,
//! position) and a walk over its records for what a recovery target needs
//! (commit times, named restore points, where the WAL ends).
//!
//! Layouts are PostgreSQL's (src/include/access/xlog_internal.h,
//! xlogrecord.h, xact.h; stable since 9.5): every page starts with a page
//! header, 24 bytes (`XLogPageHeaderData`, MAXALIGNed), the first page of a
//! segment with the 40-byte long header that adds the system identifier,
//! segment size and page size. Records are 8-byte aligned, start with a
//! 24-byte `XLogRecord` and may continue across pages (and segments). All
//! integers are little-endian on the platforms PostgreSQL ships for here.

use super::name::{Lsn, SegmentId};

/// `XLP_FIRST_IS_CONTRECORD`: the page begins with the rest of a record.
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`: this page carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_HEADER: usize = 24;
const LONG_HEADER: usize = 40;
const RECORD_HEADER: usize = 24;

/// Resource managers and record kinds offsite looks at.
const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLR_INFO_MASK: u8 = 0x0F;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC).
const PG_EPOCH_UNIX: i64 = 946_684_800;

/// The first page's long header of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub magic: u16,
    pub timeline: u32,
    /// Position of the segment's first byte.
    pub page_addr: Lsn,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub page_size: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads and checks the long header. Errors say what is wrong, for a file
/// that is not a WAL segment at all (too short, no long header, sizes that
/// PostgreSQL cannot have written).
pub fn read_header(bytes: &[u8]) -> Result<SegmentHeader, String> {
    if bytes.len() < LONG_HEADER {
        return Err(format!(
            "{} bytes is too short for a WAL segment (its first page header alone is {LONG_HEADER})",
            bytes.len()
        ));
    }
    let info = u16_at(bytes, 2);
    if info & XLP_LONG_HEADER == 0 {
        return Err(
            "its first page has no long header (XLP_LONG_HEADER): not the start of a WAL segment"
                .into(),
        );
    }
    let h = SegmentHeader {
        magic: u16_at(bytes, 0),
        timeline: u32_at(bytes, 4),
        page_addr: Lsn(u64_at(bytes, 8)),
        system_identifier: u64_at(bytes, 24),
        segment_size: u32_at(bytes, 32),
        page_size: u32_at(bytes, 36),
    };
    let seg_ok = h.segment_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&h.segment_size);
    let page_ok = h.page_size.is_power_of_two() && (1024..=65536).contains(&h.page_size);
    if !seg_ok || !page_ok {
        return Err(format!(
            "its header gives segment size {} and page size {}: not values PostgreSQL writes",
            h.segment_size, h.page_size
        ));
    }
    if !h.page_addr.0.is_multiple_of(h.segment_size as u64) {
        return Err(format!(
            "its first page claims position {}, which is not the start of a segment",
            h.page_addr
        ));
    }
    Ok(h)
}

/// A named restore point (`pg_create_restore_point`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestorePoint {
    pub name: String,
    pub lsn: Lsn,
    /// Unix microseconds.
    pub time_us: i64,
}

/// What the records of one segment say.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentSummary {
    /// Records that start in this segment.
    pub records: u64,
    /// Start of the last record that starts here (a recovery target at or
    /// before it can be reached with this segment).
    pub last_record: Option<Lsn>,
    /// Earliest and latest commit/abort time in the segment, Unix µs.
    pub first_xact_us: Option<i64>,
    pub last_xact_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_points: Vec<RestorePoint>,
    /// The segment ends with `pg_switch_wal` (the rest is padding).
    pub switched: bool,
}

/// The segment as a stream of record bytes: page headers left out, with
/// the position (LSN) of each byte recoverable.
struct Payload {
    bytes: Vec<u8>,
    start: Lsn,
    page: usize,
}

impl Payload {
    /// Collects page payloads until a page whose header does not belong
    /// here (a recycled segment's stale tail), remembering how many bytes
    /// at the start continue a record from the previous segment.
    fn collect(seg: &[u8], h: &SegmentHeader) -> (Payload, usize) {
        let page = h.page_size as usize;
        let mut bytes = Vec::with_capacity(seg.len());
        let mut skip = 0;
        for (i, p) in seg.chunks(page).enumerate() {
            if p.len() < page {
                break;
            }
            let expect = h.page_addr.0 + (i * page) as u64;
            let info = u16_at(p, 2);
            if u16_at(p, 0) != h.magic || u64_at(p, 8) != expect {
                break;
            }
            let hdr = if i == 0 { LONG_HEADER } else { SHORT_HEADER };
            if i == 0 && info & XLP_FIRST_IS_CONTRECORD != 0 {
                skip = u32_at(p, 16) as usize;
            }
            bytes.extend_from_slice(&p[hdr..]);
        }
        let start = Lsn(h.page_addr.0 + LONG_HEADER as u64);
        (Payload { bytes, start, page }, skip)
    }

    fn lsn_of(&self, offset: usize) -> Lsn {
        let first = self.page - LONG_HEADER;
        if offset < first {
            return Lsn(self.start.0 + offset as u64);
        }
        let rest = offset - first;
        let per = self.page - SHORT_HEADER;
        let page = 1 + rest / per;
        Lsn(self.start.0 - LONG_HEADER as u64
            + (page * self.page + SHORT_HEADER + rest % per) as u64)
    }
}

/// The main data of a record (after its block headers), if it has any.
fn main_data(rec: &[u8]) -> Option<&[u8]> {
    let mut at = RECORD_HEADER;
    loop {
        let id = *rec.get(at)?;
        match id {
            255 => {
                let len = *rec.get(at + 1)? as usize;
                return rec.get(rec.len().checked_sub(len)?..);
            }
            254 => {
                let len = u32::from_le_bytes(rec.get(at + 1..at + 5)?.try_into().ok()?) as usize;
                return rec.get(rec.len().checked_sub(len)?..);
            }
            253 => at += 3, // replication origin
            252 => at += 5, // top-level xid
            0..=32 => {
                // XLogRecordBlockHeader: id, fork_flags, data_length.
                let flags = *rec.get(at + 1)?;
                at += 4;
                if flags & 0x10 != 0 {
                    // Image header: length, hole_offset, bimg_info (+ hole
                    // length when the image is both holed and compressed).
                    let bimg = *rec.get(at + 4)?;
                    at += 5;
                    if bimg & 0x01 != 0 && bimg & (0x04 | 0x08 | 0x10) != 0 {
                        at += 2;
                    }
                }
                if flags & 0x80 == 0 {
                    at += 12; // RelFileNode
                }
                at += 4; // BlockNumber
            }
            _ => return None,
        }
    }
}

fn unix_us(pg_us: i64) -> i64 {
    pg_us.saturating_add(PG_EPOCH_UNIX * 1_000_000)
}

/// Walks the records that start in this segment. Stops at the end of
/// written WAL (a zero length, a broken back-link, a stale page) or at a
/// record that runs past the segment (it is finished in the next one).
pub fn summarize(seg: &[u8], h: &SegmentHeader) -> SegmentSummary {
    let (p, skip) = Payload::collect(seg, h);
    let mut s = SegmentSummary::default();
    let mut at = skip.next_multiple_of(8);
    let mut prev: Option<Lsn> = None;
    while at + RECORD_HEADER <= p.bytes.len() {
        let r = &p.bytes[at..];
        let tot = u32_at(r, 0) as usize;
        if tot < RECORD_HEADER || tot > r.len() {
            break;
        }
        let lsn = p.lsn_of(at);
        let back = Lsn(u64_at(r, 8));
        if prev.is_some_and(|pv| pv != back) || back >= lsn {
            break;
        }
        let (info, rmid) = (r[16], r[17]);
        let rec = &r[..tot];
        s.records += 1;
        s.last_record = Some(lsn);
        if rmid == RM_XACT_ID && matches!(info & XLOG_XACT_OPMASK, 0x00 | 0x20 | 0x30 | 0x40) {
            if let Some(d) = main_data(rec).filter(|d| d.len() >= 8) {
                let t = unix_us(u64_at(d, 0) as i64);
                s.first_xact_us = Some(s.first_xact_us.map_or(t, |f| f.min(t)));
                s.last_xact_us = Some(s.last_xact_us.map_or(t, |l| l.max(t)));
            }
        } else if rmid == RM_XLOG_ID && info & !XLR_INFO_MASK == XLOG_RESTORE_POINT {
            if let Some(d) = main_data(rec).filter(|d| d.len() >= 8 + 64) {
                let raw = &d[8..8 + 64];
                let end = raw.iter().position(|&b| b == 0).unwrap_or(64);
                s.restore_points.push(RestorePoint {
                    name: String::from_utf8_lossy(&raw[..end]).into_owned(),
                    lsn,
                    time_us: unix_us(u64_at(d, 0) as i64),
                });
            }
        } else if rmid == RM_XLOG_ID && info & !XLR_INFO_MASK == XLOG_SWITCH {
            s.switched = true;
            break;
        }
        prev = Some(lsn);
        at = (at + tot).next_multiple_of(8);
    }
    s
}

/// Checks that a segment's header agrees with the name it is archived
/// under: same position, and (for a whole segment) the size the header
/// declares.
pub fn check_name(name: &str, h: &SegmentHeader, len: usize) -> Result<SegmentId, String> {
    let size = h.segment_size as u64;
    let id = SegmentId::parse(&name[..24], size)
        .ok_or_else(|| format!("`{name}` is not a segment name for {size}-byte segments"))?;
    if id.start(size) != h.page_addr {
        return Err(format!(
            "its header says it starts at {}, but the name {name} means {}",
            h.page_addr,
            id.start(size)
        ));
    }
    if name.len() == 24 && len as u64 != size {
        return Err(format!(
            "it is {len} bytes, but its header declares {size}-byte segments (a truncated copy?)"
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic two-page segment: long header, one commit record, one
    /// restore point that crosses into page 2, then zeros.
    fn synthetic() -> Vec<u8> {
        let page = 8192usize;
        let mut seg = vec![0u8; page * 4];
        let mut put_page = |i: usize, long: bool, contrec: u32| {
            let p = &mut seg[i * page..];
            p[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
            let mut info = if long { XLP_LONG_HEADER } else { 0 };
            if contrec > 0 {
                info |= XLP_FIRST_IS_CONTRECORD;
            }
            p[2..4].copy_from_slice(&info.to_le_bytes());
            p[4..8].copy_from_slice(&1u32.to_le_bytes());
            p[8..16].copy_from_slice(&(0x0300_0000u64 + (i * page) as u64).to_le_bytes());
            p[16..20].copy_from_slice(&contrec.to_le_bytes());
            if long {
                p[24..32].copy_from_slice(&7_000_000_000_000_000_001u64.to_le_bytes());
                p[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
                p[36..40].copy_from_slice(&(page as u32).to_le_bytes());
            }
        };
        for i in 0..4 {
            put_page(i, i == 0, 0);
        }
        let record = |prev: u64, rmid: u8, info: u8, main: &[u8]| {
            let tot = RECORD_HEADER + 2 + main.len();
            let mut r = vec![0u8; tot];
            r[0..4].copy_from_slice(&(tot as u32).to_le_bytes());
            r[8..16].copy_from_slice(&prev.to_le_bytes());
            r[16] = info;
            r[17] = rmid;
            r[24] = 255;
            r[25] = main.len() as u8;
            r[26..].copy_from_slice(main);
            r
        };
        // Commit at 2001-01-01 00:00:00 UTC (PostgreSQL epoch + 366 days).
        let t: i64 = 366 * 86_400 * 1_000_000;
        let mut commit = t.to_le_bytes().to_vec();
        commit.extend_from_slice(&[0; 4]);
        let r1 = record(0x02FF_FF00, RM_XACT_ID, 0x00, &commit);
        seg[40..40 + r1.len()].copy_from_slice(&r1);
        // The restore point starts 48 bytes before page 1 and crosses it.
        let mut rp = (t + 1).to_le_bytes().to_vec();
        let mut name = [0u8; 64];
        name[..6].copy_from_slice(b"before");
        rp.extend_from_slice(&name);
        let r2 = record(0x0300_0028, RM_XLOG_ID, XLOG_RESTORE_POINT, &rp);
        let r2_at = page - 48;
        let (head, tail) = r2.split_at(48);
        seg[r2_at..page].copy_from_slice(head);
        seg[page + SHORT_HEADER..page + SHORT_HEADER + tail.len()].copy_from_slice(tail);
        seg
    }

    #[test]
    fn header_and_records_of_a_synthetic_segment() {
        let mut seg = synthetic();
        let h = read_header(&seg).unwrap();
        assert_eq!(h.system_identifier, 7_000_000_000_000_000_001);
        assert_eq!(h.timeline, 1);
        assert_eq!(h.page_addr, Lsn(0x0300_0000));
        // r1 sits at 0x28, r2 at page-48 — not adjacent, so the walk must
        // stop after r1 (r1's successor would be at 0x28+len, which holds
        // zeros): a gap is the end of written WAL.
        let s = summarize(&seg, &h);
        assert_eq!(s.records, 1);
        assert_eq!(
            s.last_xact_us,
            Some((PG_EPOCH_UNIX + 366 * 86_400) * 1_000_000)
        );
        // Move r1 so r2 follows it directly: now both are read, the
        // restore point across the page boundary included.
        let r1: Vec<u8> = seg[40..40 + 38].to_vec();
        seg[40..40 + 38].fill(0);
        let r2_at = 8192 - 48;
        let r1_at = r2_at - 40;
        seg[r1_at..r1_at + 38].copy_from_slice(&r1);
        // r2's back link must name r1's position.
        let r1_lsn = 0x0300_0000u64 + r1_at as u64;
        seg[r2_at + 8..r2_at + 16].copy_from_slice(&r1_lsn.to_le_bytes());
        // The page says its first (r1_at - 40) bytes finish a record of the
        // previous segment, so the walk starts at r1.
        let skip = (r1_at - 40) as u32;
        seg[2..4].copy_from_slice(&(XLP_LONG_HEADER | XLP_FIRST_IS_CONTRECORD).to_le_bytes());
        seg[16..20].copy_from_slice(&skip.to_le_bytes());
        let s = summarize(&seg, &h);
        assert_eq!(s.records, 2, "{s:?}");
        assert_eq!(s.restore_points.len(), 1);
        assert_eq!(s.restore_points[0].name, "before");
        assert_eq!(s.restore_points[0].lsn, Lsn(0x0300_0000 + r2_at as u64));
        assert_eq!(s.last_record, Some(Lsn(0x0300_0000 + r2_at as u64)));
    }

    #[test]
    fn headers_that_are_not_wal_are_refused() {
        assert!(read_header(&[0u8; 10]).unwrap_err().contains("too short"));
        assert!(
            read_header(&[0u8; 8192])
                .unwrap_err()
                .contains("long header")
        );
        let mut seg = synthetic();
        seg[32..36].copy_from_slice(&12345u32.to_le_bytes());
        assert!(
            read_header(&seg)
                .unwrap_err()
                .contains("segment size 12345")
        );
    }

    #[test]
    fn name_must_match_the_header() {
        let seg = synthetic();
        let h = read_header(&seg).unwrap();
        // 1 MiB segments: 0x0300_0000 >> 20 = 0x30.
        assert!(check_name("000000010000000000000030", &h, 1 << 20).is_ok());
        let e = check_name("000000010000000000000031", &h, 1 << 20).unwrap_err();
        assert!(e.contains("starts at 0/3000000"), "{e}");
        let e = check_name("000000010000000000000030", &h, seg.len()).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }
}
