//! The scan's state per directory, so that a run's cost grows with what
//! changed, not with the tree.
//!
//! Each directory the scan has walked has a row in `dirs`: its path, the
//! run that last saw it (`seen`, the run's Unix-ns stamp), whether it still
//! holds live files (`live`) and a `digest`: SHA-256 over the (name, size,
//! mtime ns, ctime ns, inode, device) of its regular files, sorted by name,
//! as they were when the run finished the directory with every file's live
//! member equal to its stat. A later run that lists the directory and
//! computes the same digest knows, without one catalog read per file, that
//! every file is unchanged (any write, rename, `touch`, `chmod` or
//! replacement changes a size, an mtime, a ctime or an inode). A directory
//! whose digest differs is compared file by file against its live members
//! (a merge of the sorted listing with its live members read in batches
//! in name order, [`LiveCursor`]; memory stays one batch); a directory with a
//! file that could not be read, changed while read or vanished gets no
//! digest, so the next run compares it file by file again.
//!
//! Files of directories a run did not see (deleted, moved away) are marked
//! gone by [`Catalog::sweep_unseen`]; a directory that could not be read
//! keeps its files live ([`Catalog::keep_dirs_under`]). A rebuilt catalog
//! has no digests: its first run compares every file.

use std::collections::VecDeque;

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Catalog, FileStat, LAYOUT, change_stat_at, name_of};

/// A directory as the scan state knows it.
#[derive(Clone, Debug)]
pub struct DirRow {
    pub id: i64,
    /// The digest stored by the last run that finished it cleanly.
    pub digest: Option<Vec<u8>>,
}

/// The live member of a file in a directory ([`Catalog::live_in_dir`]).
#[derive(Clone, Debug)]
pub struct LiveFile {
    pub member: i64,
    pub path_id: i64,
    pub stat: FileStat,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Read within the timestamp granularity of its last change: the same
    /// stat next run does not prove the same content ([`Catalog::set_recheck`]).
    pub recheck: bool,
}

/// The directory part of `path` (absolute path bytes): everything before
/// the last `/` (`/` itself for a file at the root).
pub fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b"",
    }
}

/// The live members of one directory, in name order, read a batch at a
/// time while the scan walks the directory's sorted listing.
pub struct LiveCursor<'c> {
    cat: &'c Catalog,
    dir: i64,
    batch: VecDeque<(Vec<u8>, LiveFile)>,
    /// The last name read from the catalog.
    after: Vec<u8>,
    done: bool,
}

/// Live members read per query by [`LiveCursor`].
const LIVE_BATCH: usize = 4096;

impl<'c> LiveCursor<'c> {
    pub fn new(cat: &'c Catalog, dir: i64) -> LiveCursor<'c> {
        LiveCursor {
            cat,
            dir,
            batch: VecDeque::new(),
            after: vec![],
            done: false,
        }
    }

    /// The live member of file `name`, if any. Names must come in sorted
    /// (byte) order; live members of names passed over (no longer in the
    /// directory) go to `gone`. Rows the scan adds for `name` or earlier
    /// names are never read back: the next batch starts after the last
    /// name read, and is read only for a name past it.
    pub fn take(&mut self, name: &[u8], gone: &mut Vec<LiveFile>) -> Result<Option<LiveFile>> {
        loop {
            while let Some((n, _)) = self.batch.front() {
                match n.as_slice().cmp(name) {
                    std::cmp::Ordering::Less => {
                        let (_, f) = self.batch.pop_front().expect("front");
                        gone.push(f);
                    }
                    std::cmp::Ordering::Equal => {
                        return Ok(self.batch.pop_front().map(|(_, f)| f));
                    }
                    std::cmp::Ordering::Greater => return Ok(None),
                }
            }
            if self.done || (!self.after.is_empty() && self.after.as_slice() >= name) {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Every live member not taken: their files are no longer here.
    pub fn rest(mut self, gone: &mut Vec<LiveFile>) -> Result<()> {
        loop {
            gone.extend(self.batch.drain(..).map(|(_, f)| f));
            if self.done {
                return Ok(());
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<()> {
        let rows = self.cat.live_in_dir(self.dir, &self.after, LIVE_BATCH)?;
        self.done = rows.len() < LIVE_BATCH;
        if let Some((n, _)) = rows.last() {
            self.after = n.clone();
        }
        self.batch.extend(rows);
        Ok(())
    }
}

impl Catalog {
    /// The row of directory `path`, added (without a digest) when new.
    pub fn dir(&self, path: &[u8]) -> Result<DirRow> {
        let mut sel = self
            .conn
            .prepare_cached("SELECT id, digest FROM dirs WHERE path = ?1")?;
        if let Some(row) = sel
            .query_row([path], |r| {
                Ok(DirRow {
                    id: r.get(0)?,
                    digest: r.get(1)?,
                })
            })
            .optional()?
        {
            return Ok(row);
        }
        let mut ins = self
            .conn
            .prepare_cached("INSERT INTO dirs(path, live) VALUES (?1, 1)")?;
        ins.execute([path])?;
        Ok(DirRow {
            id: self.conn.last_insert_rowid(),
            digest: None,
        })
    }

    /// Directory `id` was seen by run `run` with `digest` (`None`: compare
    /// it file by file next time).
    pub fn dir_seen(&self, id: i64, run: i64, digest: Option<&[u8]>) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached("UPDATE dirs SET seen = ?2, digest = ?3, live = 1 WHERE id = ?1")?;
        st.execute(params![id, run, digest])?;
        Ok(())
    }

    /// Up to `limit` live members of the files directly in directory `id`
    /// whose names sort after `after` (bytes), in name order.
    pub fn live_in_dir(
        &self,
        id: i64,
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, LiveFile)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT p.name, m.id, m.path_id, m.size, m.mtime_ns, m.ctime_ns, m.ino, m.dev,
               m.sha256, m.recheck
             FROM paths p JOIN members m ON m.path_id = p.id
             WHERE p.dir_id = ?1 AND p.name > ?2 AND m.gone_at IS NULL
             ORDER BY p.name LIMIT ?3",
        )?;
        let rows = st.query_map(params![id, after, limit as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                LiveFile {
                    member: r.get(1)?,
                    path_id: r.get(2)?,
                    stat: change_stat_at(r, 3)?,
                    sha256: r.get(8)?,
                    recheck: r.get::<_, i64>(9)? != 0,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether member `id`'s content must be compared next run although
    /// its stat is the same (see [`LiveFile::recheck`]).
    pub fn set_recheck(&self, id: i64, recheck: bool) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached("UPDATE members SET recheck = ?2 WHERE id = ?1")?;
        st.execute(params![id, recheck as i64])?;
        Ok(())
    }

    /// Directory `path` could not be read: it and every directory under it
    /// count as seen by `run`, their files stay live and their digests
    /// stay as they were.
    pub fn keep_dirs_under(&self, path: &[u8], run: i64) -> Result<()> {
        let mut prefix = path.to_vec();
        if !prefix.ends_with(b"/") {
            prefix.push(b'/');
        }
        self.conn.execute(
            "UPDATE dirs SET seen = ?3 WHERE path = ?1 OR substr(path, 1, ?4) = ?2",
            params![path, prefix, run, prefix.len() as i64],
        )?;
        Ok(())
    }

    /// The live members of every directory run `run` did not see left the
    /// source: marked gone at `run` (recorded in volume `volume_id`).
    /// Returns how many.
    pub fn sweep_unseen(&self, run: i64, volume_id: i64) -> Result<usize> {
        let n = self.conn.execute(
            "UPDATE members SET gone_at = ?1, gone_volume = ?2
             WHERE gone_at IS NULL AND path_id IN (
               SELECT p.id FROM dirs d JOIN paths p ON p.dir_id = d.id
               WHERE d.live = 1 AND (d.seen IS NULL OR d.seen <> ?1))",
            params![run, volume_id],
        )?;
        self.conn.execute(
            "UPDATE dirs SET live = 0, digest = NULL
             WHERE live = 1 AND (seen IS NULL OR seen <> ?1)",
            [run],
        )?;
        Ok(n)
    }
}

/// Bring a catalog written by an older offsite to [`LAYOUT`]: every path's
/// file name (layout 1) and directory (layout 2), computed here in batches,
/// and their indexes; `members.recheck` (layout 3). Directories of an
/// upgraded catalog have no digest: the first run compares their files one
/// by one.
pub(super) fn upgrade(conn: &Connection) -> Result<()> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if v >= LAYOUT {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| -> Result<()> {
        for (table, column, ty) in [
            ("paths", "name", "BLOB"),
            ("paths", "dir_id", "INTEGER"),
            ("members", "recheck", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            let has: bool = conn.query_row(
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
            }
        }
        if v < 2 {
            name_and_dir_of_every_path(conn)?;
        }
        // Layout 3 indexes gone records by (volume, time): `members_gone`.
        conn.execute_batch("DROP INDEX IF EXISTS members_gone_volume")?;
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS paths_name ON paths(name);
             CREATE INDEX IF NOT EXISTS paths_dir ON paths(dir_id, name);
             PRAGMA user_version = {LAYOUT};"
        ))?;
        Ok(())
    })();
    match r {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Layouts 1 and 2: each path's file name and directory.
fn name_and_dir_of_every_path(conn: &Connection) -> Result<()> {
    let mut sel =
        conn.prepare("SELECT id, path FROM paths WHERE id > ?1 ORDER BY id LIMIT 10000")?;
    let mut upd = conn.prepare("UPDATE paths SET name = ?2, dir_id = ?3 WHERE id = ?1")?;
    let mut dir_sel = conn.prepare("SELECT id FROM dirs WHERE path = ?1")?;
    let mut dir_ins = conn.prepare("INSERT INTO dirs(path, live) VALUES (?1, 1)")?;
    let mut last_dir: (Vec<u8>, i64) = (vec![], 0);
    let mut after = i64::MIN;
    loop {
        let batch: Vec<(i64, Vec<u8>)> = sel
            .query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = batch.last() else { break };
        after = last.0;
        for (id, path) in &batch {
            let parent = parent_of(path);
            if last_dir.0 != parent {
                let dir = match dir_sel
                    .query_row([parent], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    Some(d) => d,
                    None => {
                        dir_ins.execute([parent])?;
                        conn.last_insert_rowid()
                    }
                };
                last_dir = (parent.to_vec(), dir);
            }
            upd.execute(params![id, name_of(path), last_dir.1])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_paths() {
        assert_eq!(parent_of(b"/srv/rec/a.wav"), b"/srv/rec");
        assert_eq!(parent_of(b"/a.wav"), b"/");
        assert_eq!(parent_of(b"a.wav"), b"");
    }
}
