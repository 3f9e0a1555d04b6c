//! `offsite restore` for archive jobs: per path the newest version that
//! matches `--match/--since/--until` (files gone from the source included:
//! the archive is where they live now), written under `--to-dir`. What it
//! would write is summed first and checked against the target's free space
//! and inodes; a target without room is refused before a byte is written.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::catalog::{Catalog, Member, Order, Query, VolumeRow};
use super::fetch;
use super::query::Reader;

/// Space a file takes beyond its bytes is rounded to this block size.
const BLOCK: u64 = 4096;

/// What a restore would write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub files: u64,
    /// Content bytes.
    pub bytes: u64,
    /// Bytes on disk, each file rounded up to whole blocks.
    pub disk_bytes: u64,
}

fn rounded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Sum what `q` selects.
pub fn plan(cat: &Catalog, q: &Query) -> Result<Plan> {
    let mut p = Plan::default();
    cat.newest(q, |m| {
        p.files += 1;
        p.bytes += m.stat.size;
        p.disk_bytes += rounded(m.stat.size);
        Ok(())
    })?;
    Ok(p)
}

/// With `max_bytes`: the mtime from which the newest versions fill at most
/// that many bytes on disk (newest first). None if nothing fits.
pub fn newest_cutoff(cat: &Catalog, q: &Query, max_bytes: u64) -> Result<Option<i64>> {
    let mut q = q.clone();
    q.order = Order::NewestFirst;
    let mut used = 0u64;
    let mut cutoff = None;
    let mut full = false;
    cat.newest(&q, |m| {
        if full {
            return Ok(());
        }
        let next = used + rounded(m.stat.size);
        if next > max_bytes {
            full = true;
            // Everything at this mtime is out, so the cutoff is above it.
            if cutoff == Some(m.stat.mtime_ns) {
                cutoff = Some(m.stat.mtime_ns + 1);
            }
            return Ok(());
        }
        used = next;
        cutoff = Some(m.stat.mtime_ns);
        Ok(())
    })?;
    Ok(cutoff)
}

/// Refuse a target without room: free bytes and inodes of the filesystem
/// holding `dir` (or its nearest existing parent).
pub fn check_room(dir: &Path, p: &Plan) -> Result<()> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_bytes())?;
    // SAFETY: statvfs fills `st` for a NUL-terminated path we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", probe.display()));
    }
    let avail = st.f_bavail as u64 * st.f_frsize as u64;
    let need = p.disk_bytes + 64 * 1024;
    if need > avail {
        anyhow::bail!(
            "{} has {} free; restoring {} files needs {} ({} of content): nothing was written. \
             Narrow it with --match/--since/--until, or fill up to a limit newest first with --max-bytes",
            probe.display(),
            crate::units::human(avail),
            p.files,
            crate::units::human(need),
            crate::units::human(p.bytes)
        );
    }
    if st.f_favail != 0 && p.files > st.f_favail as u64 {
        anyhow::bail!(
            "{} has {} free inodes; restoring needs {} files: nothing was written",
            probe.display(),
            st.f_favail,
            p.files
        );
    }
    Ok(())
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Restored {
    pub files: u64,
    pub bytes: u64,
    /// Byte ranges fetched from destinations, and their bytes.
    pub ranges: u64,
    pub range_bytes: u64,
    /// Volumes read whole: local, already cached, or fetched into the cache.
    pub whole_volumes: u64,
    /// Files not restored: `path: why` (nothing was written under their name).
    pub failed: Vec<String>,
}

impl Restored {
    fn record(&mut self, m: &Member, r: Result<u64>) {
        match r {
            Ok(n) => {
                self.files += 1;
                self.bytes += n;
            }
            Err(e) => {
                tracing::error!("{}: {e:#}", m.path_lossy());
                self.failed.push(format!("{}: {e:#}", m.path_lossy()));
            }
        }
    }

    fn fail_all(&mut self, members: &[Member], e: &anyhow::Error) {
        for m in members {
            self.record(m, Err(anyhow::anyhow!("{e:#}")));
        }
    }
}

/// Neighbouring members closer than this are fetched as one range (the
/// gap's bytes are fetched and thrown away: cheaper than another request).
pub const SPAN_GAP: u64 = 1 << 20;
/// A span grows past this only by a single member larger than it, so a
/// fetched range stays small beside the cache bound.
pub const SPAN_MAX: u64 = 64 << 20;

/// One ranged read: bytes `start..end` of a volume, holding the members
/// `members` (indexes into the volume's member list, sorted by offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    pub members: std::ops::Range<usize>,
}

/// Coalesce members' byte ranges `(offset, clen)`, sorted by offset, into
/// spans: a member joins the previous span when the gap before it is under
/// [`SPAN_GAP`] and the span stays within [`SPAN_MAX`].
pub fn spans(ranges: &[(u64, u64)]) -> Vec<Span> {
    let mut out: Vec<Span> = vec![];
    for (i, &(off, clen)) in ranges.iter().enumerate() {
        let end = off + clen;
        match out.last_mut() {
            Some(s) if off >= s.end && off - s.end < SPAN_GAP && end - s.start <= SPAN_MAX => {
                s.end = end;
                s.members.end = i + 1;
            }
            _ => out.push(Span {
                start: off,
                end,
                members: i..i + 1,
            }),
        }
    }
    out
}

/// The rule for a volume at a destination: fetch the spans when they add
/// up to less than half the volume; else the whole volume (one request,
/// and it stays in the cache for the next file).
pub fn worth_ranges(spans: &[Span], volume_len: u64) -> bool {
    let bytes: u64 = spans.iter().map(|s| s.end - s.start).sum();
    bytes.saturating_mul(2) < volume_len
}

/// Write every selected file under `to`, one volume at a time. A file that
/// cannot be read or does not check out (length, sha256) is recorded in
/// [`Restored::failed`] and nothing is written under its name; the others
/// go on.
pub async fn extract(r: &Reader<'_>, q: &Query, to: &Path) -> Result<Restored> {
    let mut q = q.clone();
    q.order = Order::Volume;
    // One pass over the catalog, in volume order: a blocking reader hands
    // over one volume's members at a time (with the volume and its copies),
    // while the volume before is being restored.
    let catalog = r.dir.catalog();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<VolumeMembers>(1);
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        let cat = Catalog::open(&catalog)?;
        let hand_over = |members: Vec<Member>| -> Result<()> {
            let name = &members[0].volume;
            let v = cat
                .volume(name)?
                .with_context(|| format!("volume {name} vanished from the catalog"))?;
            let copies = cat.copies(v.id)?;
            tx.blocking_send((v, copies, members))
                .map_err(|_| anyhow::anyhow!("the restore stopped"))
        };
        let mut group: Vec<Member> = vec![];
        cat.newest(&q, |m| {
            if group.first().is_some_and(|g| g.volume != m.volume) {
                hand_over(std::mem::take(&mut group))?;
            }
            group.push(m);
            Ok(())
        })?;
        if !group.is_empty() {
            hand_over(group)?;
        }
        Ok(())
    });
    let mut out = Restored::default();
    while let Some((v, copies, members)) = rx.recv().await {
        restore_volume(r, &copies, &v, &members, to, &mut out).await;
    }
    reader
        .await
        .map_err(|e| anyhow::anyhow!("reading the catalog stopped: {e}"))??;
    Ok(out)
}

/// One volume, its copies per destination and its selected members.
type VolumeMembers = (VolumeRow, Vec<(String, String)>, Vec<Member>);

/// The selected `members` of volume `v`: from the local file or a cached
/// copy; else their byte ranges when [`worth_ranges`]; else (or from the
/// first member a destination would not range-read) the whole volume
/// fetched into the cache.
async fn restore_volume(
    r: &Reader<'_>,
    copies: &[(String, String)],
    v: &VolumeRow,
    members: &[Member],
    to: &Path,
    out: &mut Restored,
) {
    match r.volume_at_hand(v) {
        Ok(Some(mut h)) => {
            out.whole_volumes += 1;
            for m in members {
                out.record(m, write_one(&mut h.file, &m.range(), m, to));
            }
            return;
        }
        Ok(None) => {}
        Err(e) => return out.fail_all(members, &e),
    }
    let mut rest = 0;
    let offsets: Vec<(u64, u64)> = members.iter().map(|m| (m.offset, m.clen)).collect();
    let spans = spans(&offsets);
    if worth_ranges(&spans, v.len) {
        match ranged(r, copies, v, members, &spans, to, out).await {
            Ok(None) => return,
            Ok(Some(i)) => rest = i,
            Err(e) => return out.fail_all(members, &e),
        }
    }
    let members = &members[rest..];
    match r.volume_file(copies, v).await {
        Ok(mut h) => {
            out.whole_volumes += 1;
            for m in members {
                out.record(m, write_one(&mut h.file, &m.range(), m, to));
            }
        }
        Err(e) => out.fail_all(members, &e),
    }
}

/// What fetching one span from a volume's sources gave.
enum SpanGot<'d> {
    Fetched(fetch::Temp, &'d str),
    /// A destination reads no range: the rest goes by the whole volume.
    Unsupported,
    /// No source delivered it: the last error.
    Failed(anyhow::Error),
}

/// Sources of a volume and their ranged-read sessions, opened when first
/// needed.
struct Sources<'d> {
    names: Vec<&'d str>,
    sessions: Vec<Option<fetch::Ranges<'d>>>,
}

impl<'d> Sources<'d> {
    /// `span` of `v` from the first source that delivers it.
    async fn fetch(&mut self, r: &Reader<'d>, v: &VolumeRow, span: &Span) -> SpanGot<'d> {
        let Some(rt) = r.rt else {
            return SpanGot::Failed(anyhow::anyhow!("no plugin runtime to fetch with"));
        };
        let mut last = anyhow::anyhow!("no destination to read {} from", v.name);
        for (i, d) in self.names.iter().enumerate() {
            if self.sessions[i].is_none() {
                match fetch::Ranges::open(rt, r.dir, d, r.cache_limit).await {
                    Ok(s) => self.sessions[i] = Some(s),
                    Err(e) => {
                        last = e;
                        continue;
                    }
                }
            }
            let s = self.sessions[i].as_mut().expect("opened above");
            match s.fetch(v, span.start, span.end - span.start).await {
                Ok(fetch::Ranged::Fetched(t)) => return SpanGot::Fetched(t, d),
                Ok(fetch::Ranged::Unsupported(why)) => {
                    tracing::info!("{d} reads no byte range ({why}): fetching {} whole", v.name);
                    return SpanGot::Unsupported;
                }
                Err(e) => {
                    tracing::warn!("{e:#}");
                    last = e;
                }
            }
        }
        SpanGot::Failed(last)
    }
}

/// Fetch `spans` of `v` (each from the first of its sources that delivers
/// it) and write their members. A span of several members that no source
/// delivers (an object cut short, a transfer that failed) is retried one
/// member at a time, so only the members whose bytes are missing fail.
/// Returns the index of the first member left for a whole-volume read
/// when a destination reads no range; None when every member was dealt
/// with (restored, or recorded as failed).
async fn ranged<'d>(
    r: &Reader<'d>,
    copies: &'d [(String, String)],
    v: &VolumeRow,
    members: &[Member],
    spans: &[Span],
    to: &Path,
    out: &mut Restored,
) -> Result<Option<usize>> {
    let names = r.sources(copies, v)?;
    let mut src = Sources {
        sessions: names.iter().map(|_| None).collect(),
        names,
    };
    let mut todo: std::collections::VecDeque<Span> = spans.iter().cloned().collect();
    while let Some(span) = todo.pop_front() {
        let group = &members[span.members.clone()];
        let (part, d) = match src.fetch(r, v, &span).await {
            SpanGot::Fetched(t, d) => (t, d),
            SpanGot::Unsupported => return Ok(Some(span.members.start)),
            SpanGot::Failed(e) if group.len() > 1 => {
                tracing::warn!("{e:#}: fetching its {} members one by one", group.len());
                for (i, m) in group.iter().enumerate().rev() {
                    let at = span.members.start + i;
                    todo.push_front(Span {
                        start: m.offset,
                        end: m.offset + m.clen,
                        members: at..at + 1,
                    });
                }
                continue;
            }
            SpanGot::Failed(e) => {
                out.fail_all(group, &e);
                continue;
            }
        };
        out.ranges += 1;
        out.range_bytes += span.end - span.start;
        let mut f = match std::fs::File::open(part.path()) {
            Ok(f) => f,
            Err(e) => {
                out.fail_all(group, &anyhow::Error::from(e));
                continue;
            }
        };
        for m in group {
            let at = super::volume::MemberRange {
                offset: m.offset - span.start,
                ..m.range()
            };
            let r = write_one(&mut f, &at, m, to).with_context(|| {
                format!(
                    "bytes {}..{} of {} from {d}",
                    m.offset,
                    m.offset + m.clen,
                    v.name
                )
            });
            out.record(m, r);
        }
    }
    Ok(None)
}

fn target_of(to: &Path, m: &Member) -> PathBuf {
    let rel = m.path.strip_prefix(b"/").unwrap_or(&m.path);
    to.join(std::ffi::OsStr::from_bytes(rel))
}

/// One file: temporary name, content (at `at` in `vol`) checked against
/// its length and sha256, mode, owner (when root) and mtime, rename. On
/// any error the temporary file is removed: nothing is left under the
/// file's name.
fn write_one(
    vol: &mut std::fs::File,
    at: &super::volume::MemberRange,
    m: &Member,
    to: &Path,
) -> Result<u64> {
    let target = target_of(to, m);
    let parent = target.parent().context("a member path has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".offsite-part-{}", std::process::id()));
    let r = (|| -> Result<u64> {
        let mut out = std::fs::File::create(&tmp)?;
        let n = {
            let mut w = std::io::BufWriter::new(&mut out);
            let n = super::volume::read_member(vol, at, &mut w)?;
            w.flush()?;
            n
        };
        use std::os::unix::fs::PermissionsExt;
        out.set_permissions(std::fs::Permissions::from_mode(m.stat.mode & 0o7777))?;
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            std::os::unix::fs::fchown(&out, Some(m.stat.uid), Some(m.stat.gid))?;
        }
        let mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(m.stat.mtime_ns.max(0) as u64);
        out.set_times(
            std::fs::FileTimes::new()
                .set_modified(mtime)
                .set_accessed(mtime),
        )?;
        out.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        Ok(n)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(|e| crate::disk::explain(e, &target))
        .with_context(|| format!("restoring {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn neighbours_coalesce_and_far_or_large_ones_do_not() {
        // Three touching members, one after a small gap, one after a gap
        // of exactly SPAN_GAP (a new span), then one that would pass
        // SPAN_MAX (a new span) and a single member larger than SPAN_MAX.
        let r = [
            (0, 100),
            (100, 50),
            (150, 10),
            (160 + MIB - 1, 40),
            (200 + 2 * MIB - 1, 10),
            (210 + 2 * MIB - 1, SPAN_MAX),
            (3 * SPAN_MAX, 2 * SPAN_MAX),
        ];
        let s = spans(&r);
        let got: Vec<(u64, u64, std::ops::Range<usize>)> = s
            .iter()
            .map(|s| (s.start, s.end, s.members.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 200 + MIB - 1, 0..4),
                (200 + 2 * MIB - 1, 210 + 2 * MIB - 1, 4..5),
                (210 + 2 * MIB - 1, 210 + 2 * MIB - 1 + SPAN_MAX, 5..6),
                (3 * SPAN_MAX, 5 * SPAN_MAX, 6..7),
            ]
        );
        assert!(spans(&[]).is_empty());
    }

    #[test]
    fn ranges_only_when_they_are_under_half_the_volume() {
        let s = spans(&[(0, 100), (10 * MIB, 100)]);
        assert_eq!(s.len(), 2);
        assert!(worth_ranges(&s, 401));
        assert!(!worth_ranges(&s, 400), "exactly half: the whole volume");
        assert!(!worth_ranges(&spans(&[(0, 300)]), 500));
    }
}
