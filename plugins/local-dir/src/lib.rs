//! Keeps generations in a local or mounted directory (NAS, USB disk).
//!
//! The runner preopens the `path` setting and nothing else, so every path
//! here stays inside it. An upload is written under a hidden temporary name,
//! checked against the runner's size and sha256, fsynced, then renamed: a
//! name in the directory always has complete content.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use offsite_sdk::*;
use sha2::{Digest, Sha256};

struct LocalDir {
    dir: PathBuf,
    /// Temporaries of interrupted uploads were looked for (once per
    /// instance, i.e. per run).
    swept: bool,
}

/// Temporary uploads start with this, so `list` never shows them.
const PART_PREFIX: &str = ".offsite-part-";

impl LocalDir {
    /// A name from the runner must stay a single file name inside the directory.
    fn path_of(&self, name: &str) -> Result<PathBuf, Error> {
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains('/')
            && !name.contains('\\')
            && !name.contains('\0');
        if !ok {
            return Err(Error::Config(format!(
                "object name {name:?} is not a plain file name"
            )));
        }
        Ok(self.dir.join(name))
    }
}

impl LocalDir {
    /// Delete what an interrupted upload of this job left: our temporary
    /// name around one of the job's generations, nothing else (another
    /// job's upload may be under way).
    fn sweep(&self, job: &str) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name
                .strip_prefix(PART_PREFIX)
                .is_some_and(|n| is_generation_of(job, n));
            if ours && fs::remove_file(entry.path()).is_ok() {
                warn(&format!("removed {name}, left by an interrupted upload"));
            }
        }
    }
}

impl Destination for LocalDir {
    fn describe() -> PluginInfo {
        PluginInfo::destination(
            "local-dir",
            env!("CARGO_PKG_VERSION"),
            "Copies generations into a local or mounted directory (NAS, USB disk)",
        )
        .setting(
            Setting::new(
                "path",
                "absolute path of an existing directory to keep the copies in",
            )
            .required()
            .role(SettingRole::Directory),
        )
    }

    fn configure(settings: &Settings) -> Result<Self, Error> {
        let dir = PathBuf::from(settings.required("path")?);
        if !dir.is_absolute() {
            return Err(Error::Config(format!(
                "`path` = {} must be absolute",
                dir.display()
            )));
        }
        Ok(LocalDir { dir, swept: false })
    }

    fn upload(&mut self, req: &UploadRequest, data: &mut Reader) -> Result<(), Error> {
        if !self.swept {
            self.swept = true;
            self.sweep(&req.job);
        }
        let target = self.path_of(&req.name)?;
        let part = self.dir.join(format!("{PART_PREFIX}{}", req.name));
        let result = write_checked(&part, data, req);
        if let Err(e) = result {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
        fs::rename(&part, &target).map_err(|e| {
            let _ = fs::remove_file(&part);
            with_path(e, &target)
        })?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn remove(&mut self, req: &RemoveRequest) -> Result<(), Error> {
        let path = self.path_of(&req.name)?;
        fs::remove_file(&path).map_err(|e| with_path(e, &path))
    }

    fn fetch(&mut self, req: &FetchRequest, sink: &mut Writer) -> Result<Fetched, Error> {
        let path = self.path_of(&req.name)?;
        let mut f = File::open(&path).map_err(|e| with_path(e, &path))?;
        let n = io::copy(&mut f, sink).map_err(|e| with_path(e, &path))?;
        sink.flush()?;
        Ok(Fetched::Streamed(n))
    }

    /// Seek to `offset` and copy at most `length` bytes: only the range is
    /// read from the disk, whatever the file's size.
    fn fetch_range(&mut self, req: &RangeRequest, sink: &mut Writer) -> Result<u64, Error> {
        let path = self.path_of(&req.name)?;
        let mut f = File::open(&path).map_err(|e| with_path(e, &path))?;
        f.seek(SeekFrom::Start(req.offset))
            .map_err(|e| with_path(e, &path))?;
        let n = io::copy(&mut f.take(req.length), sink).map_err(|e| with_path(e, &path))?;
        sink.flush()?;
        Ok(n)
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        let mut out = vec![];
        for entry in fs::read_dir(&self.dir).map_err(|e| with_path(e, &self.dir))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.starts_with(prefix) {
                continue;
            }
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            out.push(ObjectInfo {
                name,
                size: Some(meta.len()),
                modified,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// Copy the stream to `part`, hashing as it goes, and refuse to keep it
/// unless size and sha256 match what the runner stored.
fn write_checked(part: &Path, data: &mut Reader, req: &UploadRequest) -> Result<(), Error> {
    let mut f = File::create(part).map_err(|e| with_path(e, part))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = data.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n]).map_err(|e| with_path(e, part))?;
        size += n as u64;
    }
    f.sync_all().map_err(|e| with_path(e, part))?;
    let sha = hex::encode(hasher.finalize());
    if size != req.size || sha != req.sha256 {
        return Err(Error::Transient(format!(
            "{} arrived with {size} bytes, sha256 {sha}; expected {} bytes, sha256 {}",
            req.name, req.size, req.sha256
        )));
    }
    Ok(())
}

fn with_path(e: io::Error, path: &Path) -> Error {
    let kind = e.kind();
    let mut err = Error::from(e);
    if let Error::Rejected(m) | Error::Other(m) | Error::NotFound(m) | Error::Transient(m) =
        &mut err
    {
        *m = format!("{}: {m}", path.display());
    }
    if kind == io::ErrorKind::NotFound {
        return Error::NotFound(format!("{} does not exist", path.display()));
    }
    err
}

export_destination!(LocalDir);
