//! A scratch folder for the archive formats pg_restore wants as files.

use std::path::{Path, PathBuf};

use crate::pipeline;

/// A scratch folder for the archive formats pg_restore wants as files
/// (seeking, `-j`): next to the generation when possible, so it lands on the
/// backup disk rather than a small /tmp.
pub(super) struct RestoreSpool(PathBuf);

impl Drop for RestoreSpool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn get_spool<'a>(
    spool: &'a mut Option<RestoreSpool>,
    generation: &Path,
) -> anyhow::Result<&'a Path> {
    if spool.is_none() {
        let name = format!(
            "{}restore-{}-{}",
            pipeline::SPOOL_PREFIX,
            std::process::id(),
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.f")
        );
        let near = generation.parent().unwrap_or(Path::new(".")).join(&name);
        let dir = match std::fs::create_dir(&near) {
            Ok(()) => near,
            Err(_) => {
                let tmp = std::env::temp_dir().join(&name);
                std::fs::create_dir(&tmp)?;
                tmp
            }
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        *spool = Some(RestoreSpool(dir));
    }
    Ok(&spool.as_ref().expect("set above").0)
}

pub(super) fn spool_path(spool: &Option<RestoreSpool>) -> anyhow::Result<&Path> {
    spool
        .as_ref()
        .map(|s| s.0.as_path())
        .ok_or_else(|| anyhow::anyhow!("directory-format dump has no files"))
}
