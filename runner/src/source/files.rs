//! File trees into the generation's tar stream (members `files/<absolute
//! path without the leading />`), and back out of it.
//!
//! What is kept is what GNU tar keeps with `--sparse --xattrs --acls`:
//! names as bytes (a name that is not UTF-8 comes back byte for byte; GNU
//! long-name members for names of 100 bytes or more), regular files, holes
//! of sparse files (old GNU sparse members, see [`sparse`]), hard
//! links as links to the first name seen, symlinks (never followed), empty
//! directories, FIFOs and device nodes; permissions including
//! setuid/setgid/sticky, owner and group as numbers *and* names (a restore
//! maps by name first, as GNU tar does), modification times to the
//! nanosecond, extended attributes and POSIX ACLs (pax records, see
//! [`pax`]). Sockets are skipped (logged), as GNU tar does.
//!
//! A live tree changes while it is read. A file that vanishes, cannot be
//! read, or whose size, mtime or ctime differ before and after it was read
//! becomes a *warning* naming the file (the backup of everything else is
//! still worth having): the member keeps the size its header announced,
//! cut or zero-filled, so the archive stays valid.
//!
//! [`archive`] writes the members and [`extract`] reads them back; [`pax`]
//! (extended records) and [`owners`] (user and group names) serve both,
//! [`sparse`] (hole maps) the archive side.

mod archive;
mod extract;
mod owners;
pub mod pax;
pub mod sparse;

pub use archive::FilesStats;
pub(crate) use archive::{append_trees, root_metadata};
pub(crate) use extract::{TreeExtractor, check_space};

/// Tar member prefix for file trees.
pub const FILES_PREFIX: &str = "files/";
