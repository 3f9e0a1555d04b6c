//! `restore_command`: hand PostgreSQL the archived file it asks for.
//!
//! PostgreSQL reads the command's exit status three ways
//! (src/backend/access/transam/xlogarchive.c, `RestoreArchivedFile`): 0 =
//! the file is at `%p`; any other status up to 125 = "not in the archive",
//! after which recovery may end and the server promote; above 125 (or a
//! signal) = a fatal error, recovery stops. So offsite answers "not there"
//! only when every place it looks positively lacks the file, and anything
//! else — an unreadable store, a checksum mismatch, a config error, a
//! destination that cannot be reached — exits [`EXIT_FATAL`].

use std::path::Path;

use super::name::kind_of;
use super::store::{WalStore, write_restored};

/// The file is not archived anywhere offsite looks.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Anything else: above 125, so PostgreSQL stops instead of promoting.
pub const EXIT_FATAL: u8 = 200;

/// What a fetch found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written to `%p` (bytes).
    Restored(u64),
    /// Positively absent from every place searched.
    NotThere,
}

/// Looks up `name` in the local store and, when present, writes it
/// (checked) to `to`. Errors are never "not there".
pub fn from_store(store: &WalStore, name: &str, to: &Path) -> anyhow::Result<Outcome> {
    if kind_of(name).is_none() {
        anyhow::bail!(
            "`{name}` is not a WAL file name; restore_command must pass %f then %p: offsite wal-fetch JOB %f %p"
        );
    }
    match store.read(name)? {
        Some(bytes) => {
            write_restored(to, &bytes)?;
            Ok(Outcome::Restored(bytes.len() as u64))
        }
        None => Ok(Outcome::NotThere),
    }
}
