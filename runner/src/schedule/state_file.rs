//! The schedule state on disk: every job's [`JobState`] in one JSON file,
//! written atomically, changed under a lock by the daemon and by `offsite
//! run` alike.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::JobState;

/// Version of the on-disk layout; a file from a newer offsite is refused
/// rather than misread.
const STATE_FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateDoc {
    version: u32,
    #[serde(default)]
    jobs: BTreeMap<String, JobState>,
}

/// What went wrong with the state file. The I/O error is the `source`
/// (print with `{:#}` through anyhow to see it), not repeated in the text.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read schedule state {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "schedule state {} is not valid: {reason}; fix it or move it aside to start with empty \
         state (the next runs fix new weekly/monthly anchors and interval jobs run at once)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write schedule state {}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot lock schedule state {}", path.display())]
    Lock { path: PathBuf, source: io::Error },
}

/// The per-job [`JobState`] map as one JSON file, e.g.
/// `<state_dir>/schedule.json`.
///
/// Written atomically (temp file in the same directory, fsync, rename, fsync
/// of the directory): a crash or full disk mid-write leaves the old file, and
/// losing it would move every weekly job to the restart's weekday.
/// [`StateFile::save`] alone is not locked: writers go through
/// [`StateFile::update`].
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub const FILE_NAME: &'static str = "schedule.json";

    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn in_dir(state_dir: impl AsRef<Path>) -> Self {
        Self::new(state_dir.as_ref().join(Self::FILE_NAME))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A missing file is a first start, not an error; anything unreadable is,
    /// because silently starting empty would lose every anchor.
    pub fn load(&self) -> Result<BTreeMap<String, JobState>, StateFileError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StateFileError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| StateFileError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let doc: StateDoc = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if doc.version != STATE_FILE_VERSION {
            return Err(corrupt(format!(
                "it has version {}, this offsite reads version {STATE_FILE_VERSION}",
                doc.version
            )));
        }
        Ok(doc.jobs)
    }

    pub fn save(&self, jobs: &BTreeMap<String, JobState>) -> Result<(), StateFileError> {
        let write_err = |source| StateFileError::Write {
            path: self.path.clone(),
            source,
        };
        let doc = StateDoc {
            version: STATE_FILE_VERSION,
            jobs: jobs.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&doc)
            .map_err(|e| write_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        json.push(b'\n');

        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(write_err)?;
        let file_name = self
            .path
            .file_name()
            .ok_or_else(|| write_err(io::Error::other("the path has no file name")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(tmp_name);

        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &self.path)?;
            fs::File::open(&dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(write_err)
    }

    /// Read-modify-write one job's state under an exclusive `flock` on
    /// `.schedule.lock` beside the file (the daemon and `offsite run` both
    /// write it, one at a time), so neither loses what the other wrote.
    /// Errors name the file, and the filesystem when it is full.
    pub fn update(&self, job: &str, f: impl FnOnce(&mut JobState)) -> anyhow::Result<()> {
        let r = (|| -> anyhow::Result<()> {
            let _lock = self.lock()?;
            let mut all = self.load()?;
            f(all.entry(job.to_string()).or_default());
            self.save(&all)?;
            Ok(())
        })();
        r.map_err(|e| crate::disk::explain(e, &self.path))
    }

    /// [`StateFile::update`], a failure logged as a warning (it costs the
    /// bookkeeping, not the backup); `false` when it failed.
    pub fn update_logged(&self, job: &str, f: impl FnOnce(&mut JobState)) -> bool {
        let r = self.update(job, f);
        if let Err(e) = &r {
            tracing::warn!(
                "cannot update the schedule state {}: {e:#}",
                self.path.display()
            );
        }
        r.is_ok()
    }

    /// The exclusive lock serializing [`StateFile::update`]s, held until
    /// the returned file is dropped.
    fn lock(&self) -> Result<fs::File, StateFileError> {
        let lock_err = |source| StateFileError::Lock {
            path: self.path.clone(),
            source,
        };
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(lock_err)?;
        let lock = fs::File::create(dir.join(".schedule.lock")).map_err(lock_err)?;
        // flock(2); released when `lock` drops.
        lock.lock().map_err(lock_err)?;
        Ok(lock)
    }

    /// The directory holding the file (`.` for a bare file name).
    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::{enabled, sched, scratch_dir, utc};
    use crate::schedule::{
        JobState, Trigger, reconcile, record_end, record_not_enabled_notice, record_start,
    };

    #[test]
    fn state_file_round_trip_atomic_missing_and_corrupt() {
        let dir = scratch_dir("statefile");
        let file = StateFile::in_dir(dir.join("nested"));
        assert_eq!(file.path(), dir.join("nested").join("schedule.json"));
        assert!(file.load().unwrap().is_empty(), "missing file = no state");

        let s = sched("weekly 04:30");
        let mut st = enabled(&s, utc(2026, 11, 20, 14, 0));
        record_start(&mut st, &s, utc(2026, 11, 21, 3, 30), Trigger::Scheduled);
        record_end(&mut st, utc(2026, 11, 21, 3, 41), "success");
        let mut off = JobState::default();
        reconcile(&mut off, &sched("manual"), false, utc(2026, 11, 20, 14, 0));
        record_not_enabled_notice(&mut off, utc(2026, 11, 20, 14, 0));
        let jobs = BTreeMap::from([("calls".to_string(), st), ("files".to_string(), off)]);

        file.save(&jobs).unwrap();
        assert_eq!(file.load().unwrap(), jobs);
        // Overwrite an existing file, still atomically.
        let mut changed = jobs.clone();
        changed.get_mut("calls").unwrap().last_outcome = Some("failure".into());
        file.save(&changed).unwrap();
        assert_eq!(file.load().unwrap(), changed);
        let names: Vec<_> = fs::read_dir(dir.join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["schedule.json"], "no temp file left behind");

        fs::write(file.path(), "{\"version\":1,\"jobs\":{\"calls\":").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains(&file.path().display().to_string()), "{err}");
        assert!(err.contains("not valid"), "{err}");

        fs::write(file.path(), "{\"version\":7,\"jobs\":{}}").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("version 7"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_save_leaves_old_file_and_no_temp() {
        let dir = scratch_dir("failsave");
        let file = StateFile::in_dir(&dir);
        let jobs = BTreeMap::from([("a".to_string(), JobState::default())]);
        file.save(&jobs).unwrap();
        // A directory where the file should be makes the rename fail.
        let blocked = StateFile::new(dir.join("sub"));
        fs::create_dir_all(dir.join("sub").join("x")).unwrap();
        let err = blocked.save(&jobs).unwrap_err().to_string();
        assert!(err.contains("sub"), "{err}");
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["schedule.json", "sub"]);
        assert_eq!(file.load().unwrap(), jobs);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn update_changes_one_job_and_keeps_the_others() {
        let dir = scratch_dir("update");
        let file = StateFile::in_dir(&dir);
        file.update("a", |st| st.last_outcome = Some("success".into()))
            .unwrap();
        file.update("b", |st| st.last_outcome = Some("failure".into()))
            .unwrap();
        let all = file.load().unwrap();
        assert_eq!(all["a"].last_outcome.as_deref(), Some("success"));
        assert_eq!(all["b"].last_outcome.as_deref(), Some("failure"));
        assert!(dir.join(".schedule.lock").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn update_of_a_corrupt_file_fails_and_leaves_it() {
        let dir = scratch_dir("update-corrupt");
        let file = StateFile::in_dir(&dir);
        fs::write(file.path(), "{").unwrap();
        let err = file.update("a", |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("not valid"), "{err:#}");
        assert_eq!(fs::read_to_string(file.path()).unwrap(), "{");
        fs::remove_dir_all(&dir).unwrap();
    }
}
