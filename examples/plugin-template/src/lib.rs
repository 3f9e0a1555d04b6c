//! A template destination: keeps each job's generations in its own folder
//! under a directory the operator names. Replace the bodies with your
//! protocol; keep the rules in the comments.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use offsite_sdk::*;

struct Template {
    root: PathBuf,
}

impl Template {
    /// Never trust a name to stay inside your namespace: check it.
    fn folder(&self, job: &str) -> Result<PathBuf, Error> {
        if job.is_empty() || job.contains(['/', '.']) {
            return Err(Error::Config(format!("bad job name {job:?}")));
        }
        Ok(self.root.join(job))
    }
}

impl Destination for Template {
    fn describe() -> PluginInfo {
        // `role` is what the setting grants: here, read-write access to one
        // directory (the sandbox shows the plugin nothing else).
        PluginInfo::destination(
            "template",
            env!("CARGO_PKG_VERSION"),
            "Template: one folder per job",
        )
        .setting(
            Setting::new("path", "absolute path of an existing directory")
                .required()
                .role(SettingRole::Directory),
        )
    }

    fn configure(settings: &Settings) -> Result<Self, Error> {
        // Check values here; do no network I/O (`offsite config check` calls this).
        Ok(Template {
            root: PathBuf::from(settings.required("path")?),
        })
    }

    fn upload(&mut self, req: &UploadRequest, data: &mut Reader) -> Result<(), Error> {
        let dir = self.folder(&req.job)?;
        fs::create_dir_all(&dir)?;
        // Write under a temporary name and rename: a name must never be
        // visible with partial content.
        let part = dir.join(format!(".{}.part", req.name));
        let written = (|| {
            let mut f = fs::File::create(&part)?;
            // `Checked` counts and hashes the bytes; `finish` compares them
            // with what the runner announced (a `transient` error: retried).
            let mut data = Checked::new(data);
            io::copy(&mut data, &mut f)?;
            f.sync_all()?;
            data.finish(req)
        })();
        if let Err(e) = written {
            // A failed upload leaves nothing behind, not even the temporary.
            let _ = fs::remove_file(&part);
            return Err(e);
        }
        fs::rename(&part, dir.join(&req.name))?;
        Ok(())
    }

    fn remove(&mut self, req: &RemoveRequest) -> Result<(), Error> {
        // io::ErrorKind::NotFound becomes Error::NotFound through `?`.
        Ok(fs::remove_file(self.folder(&req.job)?.join(&req.name))?)
    }

    fn fetch(&mut self, req: &FetchRequest, sink: &mut Writer) -> Result<Fetched, Error> {
        let mut f = fs::File::open(self.folder(&req.job)?.join(&req.name))?;
        let n = io::copy(&mut f, sink)?;
        Ok(Fetched::Streamed(n))
    }

    // Optional (offsite:plugin@0.2.0): read only the bytes asked for, never
    // more. Without this method the SDK answers `unsupported` and the runner
    // fetches the whole object instead.
    fn fetch_range(&mut self, req: &RangeRequest, sink: &mut Writer) -> Result<u64, Error> {
        let mut f = fs::File::open(self.folder(&req.job)?.join(&req.name))?;
        f.seek(SeekFrom::Start(req.offset))?;
        Ok(io::copy(&mut f.take(req.length), sink)?)
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        let mut out = vec![];
        for job in fs::read_dir(&self.root)? {
            let job = job?;
            if !job.file_type()?.is_dir() {
                continue;
            }
            for e in fs::read_dir(job.path())? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && name.starts_with(prefix) {
                    let size = Some(e.metadata()?.len());
                    out.push(ObjectInfo {
                        name,
                        size,
                        modified: None,
                    });
                }
            }
        }
        Ok(out)
    }
}

export_destination!(Template);
