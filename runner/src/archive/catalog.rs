//! The catalog: which file (path, stat, sha256) is in which volume at
//! which byte range, when it was archived and when it left the source, and
//! where each sealed volume has copies. SQLite (bundled) on disk, queried
//! row by row: nothing here holds the whole catalog in memory.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use super::pattern::{Pattern, name_of};
use super::volume::{Frame, MemberRange};

mod dirs;
pub use dirs::{DirRow, LiveCursor, LiveFile};

/// The catalog's layout version (`PRAGMA user_version`): 1 added
/// `paths.name` and its index (the file name, for `find NAME-GLOB`); 2
/// added `dirs` and `paths.dir_id` (the scan's state per directory,
/// [`dirs`]); 3 added `members.recheck` (a file read within its
/// filesystem's timestamp granularity of its last change: compared by
/// content next run) and indexes gone records by volume and time.
const LAYOUT: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes(
  id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, seq INTEGER NOT NULL,
  state TEXT NOT NULL, opened_at INTEGER NOT NULL, sealed_at INTEGER,
  len INTEGER NOT NULL DEFAULT 0, sha256 TEXT, removed_at INTEGER);
CREATE TABLE IF NOT EXISTS frames(
  volume_id INTEGER NOT NULL, seq INTEGER NOT NULL,
  csize INTEGER NOT NULL, dsize INTEGER NOT NULL,
  PRIMARY KEY(volume_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paths(id INTEGER PRIMARY KEY, path BLOB UNIQUE NOT NULL, name BLOB,
  dir_id INTEGER);
CREATE TABLE IF NOT EXISTS dirs(
  id INTEGER PRIMARY KEY, path BLOB UNIQUE NOT NULL, digest BLOB, seen INTEGER,
  live INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS members(
  id INTEGER PRIMARY KEY, path_id INTEGER NOT NULL, volume_id INTEGER NOT NULL,
  offset INTEGER NOT NULL, clen INTEGER NOT NULL, header_len INTEGER NOT NULL,
  size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
  ino INTEGER NOT NULL, dev INTEGER NOT NULL, mode INTEGER NOT NULL,
  uid INTEGER NOT NULL, gid INTEGER NOT NULL, sha256 TEXT NOT NULL,
  archived_at INTEGER NOT NULL, gone_at INTEGER, gone_volume INTEGER,
  torn INTEGER NOT NULL DEFAULT 0, recheck INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS members_path ON members(path_id, id);
CREATE INDEX IF NOT EXISTS members_volume ON members(volume_id);
CREATE INDEX IF NOT EXISTS members_mtime ON members(mtime_ns);
CREATE INDEX IF NOT EXISTS members_live ON members(path_id) WHERE gone_at IS NULL;
CREATE INDEX IF NOT EXISTS members_gone ON members(gone_volume, gone_at) WHERE gone_volume IS NOT NULL;
CREATE TABLE IF NOT EXISTS copies(
  volume_id INTEGER NOT NULL, dest TEXT NOT NULL, state TEXT NOT NULL,
  at INTEGER, error TEXT, PRIMARY KEY(volume_id, dest)) WITHOUT ROWID;
";

/// A volume as the catalog knows it.
#[derive(Clone, Debug)]
pub struct VolumeRow {
    pub id: i64,
    pub name: String,
    pub seq: i64,
    /// `open` | `sealed` | `removed`
    pub state: String,
    pub opened_at: i64,
    pub sealed_at: Option<i64>,
    pub len: u64,
    pub sha256: Option<String>,
}

/// One archived version of a file. Times are Unix nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The path's bytes (not always UTF-8).
    #[serde(with = "path_bytes")]
    pub path: Vec<u8>,
    pub volume: String,
    pub offset: u64,
    pub clen: u64,
    pub header_len: u64,
    pub stat: FileStat,
    pub sha256: String,
    pub archived_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub torn: bool,
}

/// The source's view of a file, as `lstat` gave it (times in Unix ns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Member {
    pub fn range(&self) -> MemberRange {
        MemberRange {
            offset: self.offset,
            clen: self.clen,
            header_len: self.header_len,
            size: self.stat.size,
            sha256: self.sha256.clone(),
        }
    }

    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// A path as a JSON string when it is UTF-8, else `{"b64": ...}`.
mod path_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(p) {
            Ok(t) => s.serialize_str(t),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("b64", &base64::engine::general_purpose::STANDARD.encode(p))?;
                m.end()
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Bytes { b64: String },
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(t) => Ok(t.into_bytes()),
            Raw::Bytes { b64 } => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// One line of a volume's catalog slice.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SliceLine {
    /// A member of this volume.
    Member(Member),
    /// A member (of this or an earlier volume) left the source while this
    /// volume was open.
    Gone {
        volume: String,
        offset: u64,
        at: i64,
    },
}

/// Filters of `find` and `restore`.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Over the whole path or the file name ([`Pattern`]).
    pub glob: Option<Pattern>,
    /// Content time (mtime) bounds, Unix ns, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub order: Order,
}

/// The order query results come in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// By path, then oldest version first (`find`).
    #[default]
    Path,
    /// By volume and offset: sequential reads (`restore`).
    Volume,
    /// Newest content (mtime) first (filling a disk up to a limit).
    NewestFirst,
}

pub struct Catalog {
    conn: Connection,
}

const MEMBER_COLS: &str = "p.path, v.name, m.offset, m.clen, m.header_len, m.size, m.mtime_ns,
  m.ctime_ns, m.ino, m.dev, m.mode, m.uid, m.gid, m.sha256, m.archived_at, m.gone_at, m.torn";
const MEMBER_FROM: &str =
    "members m JOIN paths p ON p.id = m.path_id JOIN volumes v ON v.id = m.volume_id";

/// The stat a change is told by (size, mtime ns, ctime ns, inode, device),
/// from five columns of `r` starting at `at`, in that order.
fn change_stat_at(r: &rusqlite::Row, at: usize) -> rusqlite::Result<FileStat> {
    Ok(FileStat {
        size: r.get::<_, i64>(at)? as u64,
        mtime_ns: r.get(at + 1)?,
        ctime_ns: r.get(at + 2)?,
        ino: r.get::<_, i64>(at + 3)? as u64,
        dev: r.get::<_, i64>(at + 4)? as u64,
        ..FileStat::default()
    })
}

fn member_of(r: &rusqlite::Row) -> rusqlite::Result<Member> {
    Ok(Member {
        path: r.get(0)?,
        volume: r.get(1)?,
        offset: r.get::<_, i64>(2)? as u64,
        clen: r.get::<_, i64>(3)? as u64,
        header_len: r.get::<_, i64>(4)? as u64,
        stat: FileStat {
            mode: r.get(10)?,
            uid: r.get(11)?,
            gid: r.get(12)?,
            ..change_stat_at(r, 5)?
        },
        sha256: r.get(13)?,
        archived_at: r.get(14)?,
        gone_at: r.get(15)?,
        torn: r.get::<_, i64>(16)? != 0,
    })
}

fn volume_of(r: &rusqlite::Row) -> rusqlite::Result<VolumeRow> {
    Ok(VolumeRow {
        id: r.get(0)?,
        name: r.get(1)?,
        seq: r.get(2)?,
        state: r.get(3)?,
        opened_at: r.get(4)?,
        sealed_at: r.get(5)?,
        len: r.get::<_, i64>(6)? as u64,
        sha256: r.get(7)?,
    })
}

const VOLUME_COLS: &str = "id, name, seq, state, opened_at, sealed_at, len, sha256";

impl Catalog {
    /// Open or create the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the catalog {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-16384;",
        )?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("creating the catalog tables in {}", path.display()))?;
        dirs::upgrade(&conn)
            .with_context(|| format!("upgrading the catalog {}", path.display()))?;
        Ok(Catalog { conn })
    }

    pub fn begin(&self) -> Result<()> {
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    pub fn commit(&self) -> Result<()> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    /// The open volume, if any.
    pub fn open_volume(&self) -> Result<Option<VolumeRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {VOLUME_COLS} FROM volumes WHERE state = 'open'"),
                [],
                volume_of,
            )
            .optional()?)
    }

    /// Start a new open volume named by `name(seq)`.
    pub fn new_volume(&self, name: impl Fn(i64) -> String, now: i64) -> Result<VolumeRow> {
        let seq: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM volumes", [], |r| {
                    r.get(0)
                })?;
        self.conn.execute(
            "INSERT INTO volumes(name, seq, state, opened_at) VALUES (?1, ?2, 'open', ?3)",
            params![name(seq), seq, now],
        )?;
        Ok(self.open_volume()?.expect("inserted above"))
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRow>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {VOLUME_COLS} FROM volumes ORDER BY seq"))?;
        let rows = st.query_map([], volume_of)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn volume(&self, name: &str) -> Result<Option<VolumeRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {VOLUME_COLS} FROM volumes WHERE name = ?1"),
                [name],
                volume_of,
            )
            .optional()?)
    }

    pub fn set_len(&self, volume: i64, len: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE volumes SET len = ?2 WHERE id = ?1",
            params![volume, len as i64],
        )?;
        Ok(())
    }

    /// The id of `path` (absolute path bytes), added with its directory
    /// when new.
    pub fn path_id(&self, path: &[u8]) -> Result<i64> {
        let parent = dirs::parent_of(path);
        let dir = self.dir(parent)?.id;
        self.path_id_in(path, dir)
    }

    /// The id of `path`, whose directory is `dir_id` ([`Catalog::dir`]).
    pub fn path_id_in(&self, path: &[u8], dir_id: i64) -> Result<i64> {
        let mut ins = self.conn.prepare_cached(
            "INSERT INTO paths(path, name, dir_id) VALUES (?1, ?2, ?3) ON CONFLICT(path) DO NOTHING",
        )?;
        if ins.execute(params![path, name_of(path), dir_id])? == 1 {
            return Ok(self.conn.last_insert_rowid());
        }
        let mut sel = self
            .conn
            .prepare_cached("SELECT id FROM paths WHERE path = ?1")?;
        Ok(sel.query_row([path], |r| r.get(0))?)
    }

    /// Record `m` (of volume `volume_id`) and its frames after `first_frame`.
    pub fn add_member(
        &self,
        volume_id: i64,
        path_id: i64,
        m: &Member,
        frames: &[Frame],
    ) -> Result<i64> {
        let mut st = self.conn.prepare_cached(
            "INSERT INTO members(path_id, volume_id, offset, clen, header_len, size, mtime_ns,
             ctime_ns, ino, dev, mode, uid, gid, sha256, archived_at, gone_at, gone_volume, torn)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        let s = &m.stat;
        st.execute(params![
            path_id,
            volume_id,
            m.offset as i64,
            m.clen as i64,
            m.header_len as i64,
            s.size as i64,
            s.mtime_ns,
            s.ctime_ns,
            s.ino as i64,
            s.dev as i64,
            s.mode,
            s.uid,
            s.gid,
            m.sha256,
            m.archived_at,
            m.gone_at,
            m.gone_at.map(|_| volume_id),
            m.torn as i64
        ])?;
        let id = self.conn.last_insert_rowid();
        self.add_frames(volume_id, frames)?;
        Ok(id)
    }

    pub fn add_frames(&self, volume_id: i64, frames: &[Frame]) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "INSERT INTO frames(volume_id, seq, csize, dsize) VALUES (?1,
             (SELECT COALESCE(MAX(seq), 0) + 1 FROM frames WHERE volume_id = ?1), ?2, ?3)",
        )?;
        for f in frames {
            st.execute(params![volume_id, f.compressed, f.decompressed])?;
        }
        Ok(())
    }

    /// Every frame of a volume, in order, to `each`.
    pub fn for_each_frame(&self, volume_id: i64, mut each: impl FnMut(Frame)) -> Result<()> {
        let mut st = self
            .conn
            .prepare("SELECT csize, dsize FROM frames WHERE volume_id = ?1 ORDER BY seq")?;
        let mut rows = st.query([volume_id])?;
        while let Some(r) = rows.next()? {
            each(Frame {
                compressed: r.get(0)?,
                decompressed: r.get(1)?,
            });
        }
        Ok(())
    }

    pub fn mark_gone(&self, member_id: i64, at: i64, volume_id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE members SET gone_at = ?2, gone_volume = ?3 WHERE id = ?1",
            params![member_id, at, volume_id],
        )?;
        Ok(())
    }

    /// Sealed volumes whose copy at `dest` is not confirmed, oldest first.
    pub fn pending_at(&self, dest: &str) -> Result<Vec<VolumeRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {VOLUME_COLS} FROM volumes v WHERE v.state = 'sealed' AND NOT EXISTS
             (SELECT 1 FROM copies c WHERE c.volume_id = v.id AND c.dest = ?1 AND c.state IN ('done', 'removed'))
             ORDER BY seq"
        ))?;
        let rows = st.query_map([dest], volume_of)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Write the volume's catalog slice, line by line, to `each`.
    pub fn for_each_slice_line(
        &self,
        volume_id: i64,
        mut each: impl FnMut(&SliceLine) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {MEMBER_COLS} FROM {MEMBER_FROM} WHERE m.volume_id = ?1 ORDER BY m.id"
        ))?;
        let mut rows = st.query([volume_id])?;
        while let Some(r) = rows.next()? {
            let mut m = member_of(r)?;
            // Gone times travel as their own lines, in the volume open then.
            m.gone_at = None;
            each(&SliceLine::Member(m))?;
        }
        let mut st = self.conn.prepare(
            "SELECT v.name, m.offset, m.gone_at FROM members m JOIN volumes v ON v.id = m.volume_id
             WHERE m.gone_volume = ?1 ORDER BY m.id",
        )?;
        let mut rows = st.query([volume_id])?;
        while let Some(r) = rows.next()? {
            each(&SliceLine::Gone {
                volume: r.get(0)?,
                offset: r.get::<_, i64>(1)? as u64,
                at: r.get(2)?,
            })?;
        }
        Ok(())
    }

    /// Apply a slice line read back from volume `volume_id` (rebuild).
    pub fn apply_slice_line(&self, volume_id: i64, line: &SliceLine) -> Result<()> {
        match line {
            SliceLine::Member(m) => {
                let pid = self.path_id(&m.path)?;
                self.add_member(volume_id, pid, m, &[])?;
            }
            SliceLine::Gone { volume, offset, at } => {
                self.conn.execute(
                    "UPDATE members SET gone_at = ?3, gone_volume = ?4
                     WHERE volume_id = (SELECT id FROM volumes WHERE name = ?1) AND offset = ?2",
                    params![volume, *offset as i64, at, volume_id],
                )?;
            }
        }
        Ok(())
    }

    pub fn seal(
        &self,
        volume_id: i64,
        at: i64,
        len: u64,
        sha256: &str,
        dests: &[String],
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE volumes SET state = 'sealed', sealed_at = ?2, len = ?3, sha256 = ?4 WHERE id = ?1",
            params![volume_id, at, len as i64, sha256],
        )?;
        for d in dests {
            self.set_copy(volume_id, d, "pending", None, None)?;
        }
        self.conn
            .execute("DELETE FROM frames WHERE volume_id = ?1", [volume_id])?;
        Ok(())
    }

    /// Insert a sealed volume read back from a destination (rebuild).
    pub fn insert_sealed(&self, v: &VolumeRow) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO volumes(name, seq, state, opened_at, sealed_at, len, sha256)
             VALUES (?1, ?2, 'sealed', ?3, ?4, ?5, ?6)",
            params![
                v.name,
                v.seq,
                v.opened_at,
                v.sealed_at,
                v.len as i64,
                v.sha256
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn set_copy(
        &self,
        volume_id: i64,
        dest: &str,
        state: &str,
        at: Option<i64>,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO copies(volume_id, dest, state, at, error) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(volume_id, dest) DO UPDATE SET state = ?3, at = ?4, error = ?5",
            params![volume_id, dest, state, at, error],
        )?;
        Ok(())
    }

    /// `(dest, state)` of every copy of a volume.
    pub fn copies(&self, volume_id: i64) -> Result<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT dest, state FROM copies WHERE volume_id = ?1 ORDER BY dest")?;
        let rows = st.query_map([volume_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_removed(&self, volume_id: i64, at: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE volumes SET state = 'removed', removed_at = ?2 WHERE id = ?1",
            params![volume_id, at],
        )?;
        Ok(())
    }

    /// A volume's members: `(count, content bytes, oldest archived_at,
    /// newest mtime)`.
    pub fn volume_span(&self, volume_id: i64) -> Result<(u64, u64, Option<i64>, Option<i64>)> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(archived_at), MAX(mtime_ns)
             FROM members WHERE volume_id = ?1",
            [volume_id],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                    r.get(3)?,
                ))
            },
        )?)
    }

    /// When a volume's first member was archived (runs append in time
    /// order, so that is its oldest): one index lookup, not a pass over
    /// the volume's members.
    pub fn first_archived_at(&self, volume_id: i64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT archived_at FROM members WHERE volume_id = ?1 ORDER BY id LIMIT 1",
                [volume_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// When the oldest gone record a volume carries was made: one index
    /// lookup.
    pub fn oldest_gone(&self, volume_id: i64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT gone_at FROM members WHERE gone_volume = ?1 ORDER BY gone_at LIMIT 1",
                [volume_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Members matching `q`, every version, ordered by path then age.
    pub fn find(&self, q: &Query, each: impl FnMut(Member) -> Result<()>) -> Result<()> {
        self.query_members(q, false, each)
    }

    /// For restore: per path its newest version, if it matches `q`.
    pub fn newest(&self, q: &Query, each: impl FnMut(Member) -> Result<()>) -> Result<()> {
        self.query_members(q, true, each)
    }

    fn query_members(
        &self,
        q: &Query,
        newest: bool,
        mut each: impl FnMut(Member) -> Result<()>,
    ) -> Result<()> {
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![];
        let mut sql = String::new();
        let timed = q.since.is_some() || q.until.is_some();
        // With a literal prefix (or no time bound) the matching paths come
        // first, from `paths` alone, and drive the join (CROSS JOIN keeps
        // that order; `+` keeps the mtime index out of it: with bound
        // parameters the planner would guess a time range selective and
        // walk every member in it). A pattern that starts with a wildcard
        // under a narrow time bound is a filter on the members in that range.
        let (from, time_col) = match &q.glob {
            Some(p) if p.range().is_some() || !timed || !self.time_is_narrow(q)? => {
                let col = p.column();
                let mut hit = format!("SELECT id FROM paths WHERE {col} GLOB CAST(? AS BLOB)");
                args.push(Box::new(p.glob().to_vec()));
                if let Some((low, high)) = p.range() {
                    hit.push_str(&format!(" AND {col} >= ?"));
                    args.push(Box::new(low));
                    if let Some(h) = high {
                        hit.push_str(&format!(" AND {col} < ?"));
                        args.push(Box::new(h));
                    }
                }
                sql.push_str(&format!("WITH hit(id) AS MATERIALIZED ({hit}) "));
                (
                    "hit CROSS JOIN members m ON m.path_id = hit.id JOIN paths p ON p.id = m.path_id
                     JOIN volumes v ON v.id = m.volume_id"
                        .to_string(),
                    "+m.mtime_ns",
                )
            }
            Some(p) => {
                args.push(Box::new(p.glob().to_vec()));
                (
                    format!("{MEMBER_FROM} AND p.{} GLOB CAST(? AS BLOB)", p.column()),
                    "m.mtime_ns",
                )
            }
            None => (MEMBER_FROM.to_string(), "m.mtime_ns"),
        };
        sql.push_str(&format!(
            "SELECT {MEMBER_COLS} FROM {from} WHERE v.state != 'removed'"
        ));
        for (t, op) in [(q.since, ">="), (q.until, "<=")] {
            if let Some(t) = t {
                sql.push_str(&format!(" AND {time_col} {op} ?"));
                args.push(Box::new(t));
            }
        }
        if newest {
            sql.push_str(
                " AND m.torn = 0 AND m.id = (SELECT MAX(id) FROM members n WHERE n.path_id = m.path_id AND n.torn = 0)",
            );
        }
        sql.push_str(match q.order {
            Order::Path => " ORDER BY p.path, m.id",
            Order::Volume => " ORDER BY v.seq, m.offset",
            Order::NewestFirst => " ORDER BY m.mtime_ns DESC, m.id DESC",
        });
        let mut st = self.conn.prepare(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(r) = rows.next()? {
            each(member_of(r)?)?;
        }
        Ok(())
    }

    /// Whether `q`'s time bounds hold fewer members than a quarter of the
    /// paths (counted up to that many through the mtime index): then
    /// walking those members beats matching every path.
    fn time_is_narrow(&self, q: &Query) -> Result<bool> {
        let paths: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(id), 0) FROM paths", [], |r| r.get(0))?;
        let cap = paths / 4;
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM (SELECT 1 FROM members WHERE mtime_ns >= ?1 AND mtime_ns <= ?2 LIMIT ?3)",
            params![q.since.unwrap_or(i64::MIN), q.until.unwrap_or(i64::MAX), cap],
            |r| r.get(0),
        )?;
        Ok(n < cap)
    }

    /// The version of `path` that was at the source at `at` (Unix ns), or
    /// the newest when `at` is None. Torn versions are never chosen.
    pub fn version_at(&self, path: &[u8], at: Option<i64>) -> Result<Option<Member>> {
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM {MEMBER_FROM} WHERE p.path = ?1 AND m.torn = 0
             AND v.state != 'removed' AND (?2 IS NULL OR m.archived_at <= ?2)
             ORDER BY m.id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .query_row(&sql, params![path, at], member_of)
            .optional()?)
    }

    /// Files not yet protected at any destination (their volume is open,
    /// or sealed with no confirmed copy): `(count, bytes, oldest archived_at)`.
    pub fn unprotected(&self) -> Result<(u64, u64, Option<i64>)> {
        let cond = "v.state = 'open' OR NOT EXISTS (SELECT 1 FROM copies c WHERE c.volume_id = v.id AND c.state = 'done')";
        Ok(self.conn.query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(m.size), 0), MIN(m.archived_at) FROM members m
                 JOIN volumes v ON v.id = m.volume_id WHERE v.state != 'removed' AND ({cond})"
            ),
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                ))
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(path: &[u8], mtime_ns: i64) -> Member {
        Member {
            path: path.to_vec(),
            volume: String::new(),
            offset: 0,
            clen: 1,
            header_len: 512,
            stat: FileStat {
                size: 1,
                mtime_ns,
                ..FileStat::default()
            },
            sha256: "x".into(),
            archived_at: mtime_ns,
            gone_at: None,
            torn: false,
        }
    }

    fn found(c: &Catalog, pattern: &[u8], since: Option<i64>, until: Option<i64>) -> Vec<String> {
        let mut out = vec![];
        let q = Query {
            glob: Some(Pattern::parse(pattern)),
            since,
            until,
            order: Order::Path,
        };
        c.find(&q, |m| {
            out.push(m.path_lossy());
            Ok(())
        })
        .unwrap();
        out
    }

    /// A catalog written before `paths.name` existed is upgraded on open;
    /// name patterns match file names only (never a folder's name), path
    /// patterns whole paths, with and without time bounds.
    #[test]
    fn an_old_catalog_is_upgraded_and_patterns_answer_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.sqlite");
        {
            let old = Connection::open(&p).unwrap();
            old.execute_batch(&SCHEMA.replace(", name BLOB)", ")"))
                .unwrap();
            old.execute_batch(
                "INSERT INTO volumes(name, seq, state, opened_at) VALUES ('v1', 1, 'open', 0);
                 INSERT INTO paths(path) VALUES (CAST('/c/call-1.wav' AS BLOB)),
                   (CAST('/c/call-2.wav' AS BLOB)), (CAST('/call-9/x.wav' AS BLOB));
                 INSERT INTO members(path_id, volume_id, offset, clen, header_len, size,
                   mtime_ns, ctime_ns, ino, dev, mode, uid, gid, sha256, archived_at)
                 SELECT id, 1, 0, 1, 512, 1, id * 10, 0, id, 0, 33188, 0, 0, 'x', 0 FROM paths;",
            )
            .unwrap();
        }
        let c = Catalog::open(&p).unwrap();
        let v: i64 = c
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, LAYOUT);
        assert_eq!(
            found(&c, b"call-*", None, None),
            ["/c/call-1.wav", "/c/call-2.wav"]
        );
        assert_eq!(found(&c, b"call-*", Some(15), Some(25)), ["/c/call-2.wav"]);
        assert_eq!(found(&c, b"*.wav", Some(25), None), ["/call-9/x.wav"]);
        assert_eq!(found(&c, b"*-?.wav", None, Some(15)), ["/c/call-1.wav"]);
        assert_eq!(found(&c, b"/call-9/*", None, None), ["/call-9/x.wav"]);
        assert_eq!(found(&c, b"/c*/x.wav", None, None), ["/call-9/x.wav"]);
        // A new path gets its name as it is added.
        let vid = c.open_volume().unwrap().unwrap().id;
        let latin1 = b"/c/Gespr\xe4ch.wav";
        let pid = c.path_id(latin1).unwrap();
        c.add_member(vid, pid, &member(latin1, 40), &[]).unwrap();
        assert_eq!(found(&c, b"Gespr\xe4*", None, None).len(), 1);
        assert!(found(&c, b"Gespr\xc3\xa4*", None, None).is_empty());
    }
}
