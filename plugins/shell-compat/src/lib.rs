//! Ships generations with the operator's own scripts, the contract of seed
//! 000: `ecopy FILE` uploads a backup file, `eremove FILE` removes it when
//! rotation drops it, and `eremove` may be absent (rotation on that remote is
//! then external).
//!
//! The plugin itself touches nothing: it asks the runner to run a program from
//! its `scripts_dir` setting through `host.exec`, which the runner allows only
//! because that setting has the `exec-directory` role. The runner runs only
//! files directly inside that directory (symlinks resolved, so one pointing
//! out is refused), without a shell, with the arguments exactly as given, an
//! environment of PATH, OFFSITE_JOB, OFFSITE_DESTINATION and OFFSITE_FILE,
//! stdout and stderr into its log line by line, and kills the program with its
//! process group after the `timeout` setting.
//!
//! | call   | runs                    | exit 0              | other exit    | program absent |
//! | ------ | ----------------------- | ------------------- | ------------- | -------------- |
//! | upload | `ecopy FILE`            | uploaded            | `transient`   | `config`       |
//! | remove | `eremove FILE`          | removed             | `transient`   | `unsupported`  |
//! | fetch  | `efetch NAME TARGET`    | placed at TARGET    | `transient`   | `unsupported`  |
//! | list   | nothing                 |                     |               | `unsupported`  |
//!
//! FILE is the generation's absolute path on the runner's machine
//! (`<backup_dir>/<job>/<name>`), the same string for `ecopy` and `eremove`
//! (the runner passes it in `RemoveRequest.local_path`), so a script can keep
//! using `basename "$1"` as the remote name; for `eremove` the local file may
//! be gone already. NAME is the object's name (that basename) and TARGET the
//! absolute path `efetch` must write.
//!
//! Seed 000's scripts are called for backup files only: each generation's
//! manifest (`<name>.manifest.json`, which the runner ships beside every
//! generation) is answered `unsupported` without running anything, and the
//! runner keeps it locally only. With `ship_manifests = true` the manifests
//! go through the same scripts (each script then runs twice per generation),
//! so a restore through `efetch` on a new machine can check the sha256.
//!
//! A non-zero exit is `transient` because seed 000 gives exit codes no
//! meaning beyond "error", and the usual causes (remote down, network, disk
//! full over there) pass: the runner retries the upload and keeps it pending,
//! where `rejected` would give the generation up for that destination. A
//! program killed at its timeout is `transient` too (the runner says so).

use offsite_sdk::*;

/// The uploader, as seed 000 names it. Required.
const ECOPY: &str = "ecopy";
/// The remover, as seed 000 names it. Optional.
const EREMOVE: &str = "eremove";
/// The fetcher: offsite's addition, so `offsite restore --from` works too.
const EFETCH: &str = "efetch";
/// The runner's name for the manifest that travels beside a generation.
const MANIFEST_SUFFIX: &str = ".manifest.json";

struct ShellCompat {
    /// For messages only: the runner resolves and enforces the directory.
    scripts_dir: String,
    /// `ship_manifests`: hand the manifests to the scripts too.
    ship_manifests: bool,
}

/// What became of one run of an operator's program.
enum Ran {
    Exited(i32),
    /// No such file in `scripts_dir` (the runner's `not-found`).
    Absent(String),
}

impl ShellCompat {
    /// Seed 000's scripts see backup files only, unless the operator opted
    /// in: a manifest is refused before any script runs.
    fn refuse_manifest(&self, name: &str) -> Result<(), Error> {
        if name.ends_with(MANIFEST_SUFFIX) && !self.ship_manifests {
            return Err(Error::Unsupported(format!(
                "{name}: manifests are not handed to the scripts (set `ship_manifests = true` to ship them with ecopy)"
            )));
        }
        Ok(())
    }

    fn run(&self, program: &str, args: &[String]) -> Result<Ran, Error> {
        match exec(program, args) {
            Ok(code) => Ok(Ran::Exited(code)),
            Err(Error::NotFound(m)) => Ok(Ran::Absent(m)),
            Err(e) => Err(e),
        }
    }

    /// A non-zero exit: worth another try later, see the module docs.
    fn failed(&self, program: &str, args: &[String], code: i32, what: &str) -> Error {
        Error::Transient(format!(
            "`{program} {}` in {} exited with {code}: {what}; it is retried later (the script's own output is in the log above)",
            args.join(" "),
            self.scripts_dir
        ))
    }
}

/// The runner always fills in the local path; an empty one would turn into a
/// script called with an empty argument, so say so instead.
fn local_path<'a>(path: &'a str, call: &str) -> Result<&'a str, Error> {
    if path.is_empty() {
        return Err(Error::Other(format!(
            "{call}: the runner passed no local path of the generation"
        )));
    }
    Ok(path)
}

impl Destination for ShellCompat {
    fn describe() -> PluginInfo {
        PluginInfo::destination(
            "shell-compat",
            env!("CARGO_PKG_VERSION"),
            "Runs the operator's ecopy FILE / eremove FILE scripts (eremove optional; efetch NAME TARGET for restores)",
        )
        .setting(
            Setting::new(
                "scripts_dir",
                "absolute path of the directory holding ecopy and optionally eremove and efetch; only programs directly inside it run",
            )
            .required()
            .role(SettingRole::ExecDirectory),
        )
        .setting(
            Setting::new(
                "ship_manifests",
                "true: also call ecopy/eremove/efetch for each generation's NAME.manifest.json (so a restore on a new machine can check the sha256); false: the scripts see backup files only (seed 000)",
            )
            .default("false"),
        )
        .setting(
            Setting::new(
                "timeout",
                "how long one script may run before it is killed with its children, e.g. 30m, 2h",
            )
            .default("1h"),
        )
    }

    fn configure(settings: &Settings) -> Result<Self, Error> {
        // The runner has already canonicalized the directory and parsed
        // `timeout` for its exec grant; a relative path would depend on the
        // runner's working directory, so refuse it here.
        let scripts_dir = settings.required("scripts_dir")?;
        if !scripts_dir.starts_with('/') {
            return Err(Error::Config(format!(
                "`scripts_dir` = {scripts_dir} must be an absolute path, e.g. /var/db/pgsql"
            )));
        }
        Ok(ShellCompat {
            scripts_dir: scripts_dir.to_string(),
            ship_manifests: settings.flag("ship_manifests")?.unwrap_or(false),
        })
    }

    /// The stream is not read: `ecopy` reads the file itself, and draining a
    /// large generation through the sandbox would only cost time.
    fn upload(&mut self, req: &UploadRequest, _data: &mut Reader) -> Result<(), Error> {
        self.refuse_manifest(&req.name)?;
        let args = [local_path(&req.local_path, "upload")?.to_string()];
        match self.run(ECOPY, &args)? {
            Ran::Exited(0) => Ok(()),
            Ran::Exited(code) => Err(self.failed(ECOPY, &args, code, "the upload did not happen")),
            Ran::Absent(m) => Err(Error::Config(format!(
                "{m}: put an executable `{ECOPY}` there that uploads the file named by its single argument and exits 0 on success"
            ))),
        }
    }

    fn remove(&mut self, req: &RemoveRequest) -> Result<(), Error> {
        self.refuse_manifest(&req.name)?;
        let args = [local_path(&req.local_path, "remove")?.to_string()];
        match self.run(EREMOVE, &args)? {
            Ran::Exited(0) => Ok(()),
            Ran::Exited(code) => Err(self.failed(
                EREMOVE,
                &args,
                code,
                &format!("{} was not removed", req.name),
            )),
            Ran::Absent(m) => Err(Error::Unsupported(format!(
                "{m}: without `{EREMOVE}` old copies on this destination are rotated by something else (seed 000)"
            ))),
        }
    }

    fn fetch(&mut self, req: &FetchRequest, _sink: &mut Writer) -> Result<Fetched, Error> {
        self.refuse_manifest(&req.name)?;
        let args = [
            req.name.clone(),
            local_path(&req.local_path, "fetch")?.to_string(),
        ];
        match self.run(EFETCH, &args)? {
            Ran::Exited(0) => Ok(Fetched::PlacedAtLocalPath),
            Ran::Exited(code) => Err(self.failed(
                EFETCH,
                &args,
                code,
                &format!("{} was not fetched", req.name),
            )),
            Ran::Absent(m) => Err(Error::Unsupported(format!(
                "{m}: add an executable `{EFETCH} NAME TARGET` that writes the named backup to TARGET to restore from this destination"
            ))),
        }
    }

    fn list(&mut self, _prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        Err(Error::Unsupported(
            "the ecopy/eremove scripts cannot list what the remote holds; offsite keeps each generation's uploads in its manifest".into(),
        ))
    }
}

export_destination!(ShellCompat);
