//! The write side of a generation: bytes from a source are compressed, hashed
//! and written to disk so that a generation file either exists complete and
//! durable under its final name, or does not exist at all.
//!
//! Order of layers, outermost first:
//!
//! ```text
//! source bytes → compressor (zstd | gzip | none) → sha256 + byte count → BufWriter → `.tmp-…` file
//! ```
//!
//! The hash is taken over the *stored* (compressed) bytes because that is what
//! destinations hold and what `verify = "checksum"` can re-check without
//! decompressing; `sha256sum FILE` gives the same value.
//!
//! Every buffer here has a fixed size, so a 50 GiB dump is written in the same
//! memory as a 50 KiB one (zstd's multi-threaded mode keeps one window per
//! worker, which depends on the level and thread count, not on the input).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Size of the copy buffers used throughout the data path.
pub const BUFFER_SIZE: usize = 256 * 1024;

/// Prefix of a generation being written. The store must never count such a
/// file as a generation; after a crash it may delete it (see
/// [`remove_stale_temporaries`]).
pub const TEMP_PREFIX: &str = ".tmp-";

/// Prefix of the spool directories sources use for formats that need a file
/// on disk before they can be archived.
pub const SPOOL_PREFIX: &str = ".spool-";

/// How a generation is compressed on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Compression {
    /// zstd at `level`; `threads > 1` uses zstd's own worker threads (zstdmt),
    /// which is what makes zstd keep up with a fast `pg_dump`.
    Zstd { level: i32, threads: u32 },
    /// gzip at `level` 0–9, for destinations or people that only have gunzip.
    Gzip { level: u32 },
    /// Stored as produced, e.g. when the filesystem or destination compresses.
    None,
}

/// Why a compression setting was refused. The text names the accepted values
/// (it is the config's error for `level`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown compression \"{0}\": accepted values are zstd (default), gzip, none")]
    UnknownName(String),
    #[error("{0} is out of range for zstd; accepted: 1..=22")]
    ZstdLevel(i64),
    #[error("{0} is out of range for gzip; accepted: 0..=9")]
    GzipLevel(i64),
    #[error("has no effect with compression = \"none\"; remove it")]
    NoneLevel(i64),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd {
            level: 3,
            threads: Compression::default_threads(),
        }
    }
}

impl Compression {
    /// zstd worker threads used when the config does not say: all cores, since
    /// the dump itself mostly waits on the server and the disk.
    pub fn default_threads() -> u32 {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    }

    /// The config names, the default first.
    pub const NAMES: [&'static str; 3] = ["zstd", "gzip", "none"];

    /// Builds a compression from the config's `compression` and `level` keys:
    /// zstd levels 1 to 22 (default 3), gzip 0 to 9 (default 6), none takes
    /// no level. The one place levels are checked.
    pub fn from_config(name: &str, level: Option<i64>) -> Result<Compression, CompressionError> {
        match name {
            "zstd" => {
                let level = level.unwrap_or(3);
                match i32::try_from(level) {
                    Ok(l) if (1..=22).contains(&l) => Ok(Compression::Zstd {
                        level: l,
                        threads: Compression::default_threads(),
                    }),
                    _ => Err(CompressionError::ZstdLevel(level)),
                }
            }
            "gzip" => {
                let level = level.unwrap_or(6);
                match u32::try_from(level) {
                    Ok(l) if l <= 9 => Ok(Compression::Gzip { level: l }),
                    _ => Err(CompressionError::GzipLevel(level)),
                }
            }
            "none" => match level {
                Some(l) => Err(CompressionError::NoneLevel(l)),
                None => Ok(Compression::None),
            },
            other => Err(CompressionError::UnknownName(other.to_string())),
        }
    }

    /// The config name: `zstd`, `gzip` or `none`.
    pub fn name(&self) -> &'static str {
        match self {
            Compression::Zstd { .. } => "zstd",
            Compression::Gzip { .. } => "gzip",
            Compression::None => "none",
        }
    }

    /// File name extension without the dot; empty for [`Compression::None`].
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Zstd { .. } => "zst",
            Compression::Gzip { .. } => "gz",
            Compression::None => "",
        }
    }

    /// `base` plus this compression's extension, e.g. `x.sql` → `x.sql.zst`.
    pub fn file_name(&self, base: &str) -> String {
        match self.extension() {
            "" => base.to_string(),
            ext => format!("{base}.{ext}"),
        }
    }

    /// Guesses the compression from a stored file's name, for generations
    /// found on disk or at a destination without a manifest.
    pub fn from_file_name(name: &str) -> Compression {
        if name.ends_with(".zst") {
            Compression::Zstd {
                level: 3,
                threads: 1,
            }
        } else if name.ends_with(".gz") {
            Compression::Gzip { level: 6 }
        } else {
            Compression::None
        }
    }
}

impl FromStr for Compression {
    type Err = CompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::from_config(s, None)
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::Zstd { level, threads } => {
                write!(f, "zstd level {level}, {threads} thread(s)")
            }
            Compression::Gzip { level } => write!(f, "gzip level {level}"),
            Compression::None => f.write_str("none"),
        }
    }
}

/// A finished generation file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    /// Final path (already renamed and fsynced).
    pub path: PathBuf,
    /// Stored size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the stored bytes.
    pub sha256: String,
}

/// Counts and hashes what reaches the file, i.e. the compressed bytes.
struct HashingFile {
    file: BufWriter<File>,
    hasher: Sha256,
    size: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Encoder {
    Zstd(zstd::stream::write::Encoder<'static, HashingFile>),
    Gzip(flate2::write::GzEncoder<HashingFile>),
    None(HashingFile),
}

impl Encoder {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Zstd(e) => e,
            Encoder::Gzip(e) => e,
            Encoder::None(e) => e,
        }
    }
    fn finish(self) -> io::Result<HashingFile> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::None(e) => Ok(e),
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Streaming writer for one generation file: `Write` the source bytes in,
/// then [`GenerationWriter::finish`]. Dropping it unfinished (error, panic,
/// cancellation) deletes the temporary file, so a failed job leaves nothing a
/// later listing could mistake for a generation.
pub struct GenerationWriter {
    encoder: Option<Encoder>,
    dir: PathBuf,
    tmp_path: PathBuf,
    final_path: PathBuf,
    uncompressed: u64,
}

impl GenerationWriter {
    /// Starts `dir/final_name` as `dir/.tmp-final_name-<pid>-<n>`.
    ///
    /// The temporary lives in the destination folder so that the final
    /// `rename` is atomic (same filesystem). It is created 0600: dumps hold
    /// data and role password hashes.
    pub fn create(dir: &Path, final_name: &str, compression: &Compression) -> io::Result<Self> {
        if final_name.is_empty() || final_name.contains('/') || final_name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid generation file name {final_name:?}"),
            ));
        }
        let final_path = dir.join(final_name);
        if final_path.symlink_metadata().is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} already exists; a generation is never overwritten",
                    final_path.display()
                ),
            ));
        }
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.join(format!(
            "{TEMP_PREFIX}{final_name}-{}-{n}",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| annotate(e, "cannot create", &tmp_path))?;
        // From here on the temp file exists: any early return must remove it.
        let sink = HashingFile {
            file: BufWriter::with_capacity(BUFFER_SIZE, file),
            hasher: Sha256::new(),
            size: 0,
        };
        let encoder = match make_encoder(sink, compression) {
            Ok(e) => e,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        Ok(GenerationWriter {
            encoder: Some(encoder),
            dir: dir.to_path_buf(),
            tmp_path,
            final_path,
            uncompressed: 0,
        })
    }

    /// Where the bytes go until [`GenerationWriter::finish`].
    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Where the file will be once finished.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Bytes received so far, before compression.
    pub fn uncompressed_bytes(&self) -> u64 {
        self.uncompressed
    }

    /// Flushes the compressor, fsyncs, renames to the final name (refusing to
    /// replace an existing file) and fsyncs the directory so the rename itself
    /// survives a power cut.
    pub fn finish(mut self) -> io::Result<Written> {
        let encoder = self.encoder.take().expect("finish called once");
        let result = (|| {
            let sink = encoder.finish()?;
            let HashingFile { file, hasher, size } = sink;
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            rename_no_replace(&self.tmp_path, &self.final_path)?;
            File::open(&self.dir)?.sync_all()?;
            Ok(Written {
                path: self.final_path.clone(),
                size,
                sha256: hex::encode(hasher.finalize()),
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp_path);
        }
        result.map_err(|e| annotate(e, "cannot finish", &self.final_path))
    }
}

impl Write for GenerationWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .encoder
            .as_mut()
            .ok_or_else(|| io::Error::other("generation writer already finished"))?
            .writer()
            .write(buf)?;
        self.uncompressed += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.encoder.as_mut() {
            Some(e) => e.writer().flush(),
            None => Ok(()),
        }
    }
}

impl Drop for GenerationWriter {
    fn drop(&mut self) {
        if let Some(encoder) = self.encoder.take() {
            // Unfinished: discard the compressor without flushing and remove
            // the partial file.
            drop(encoder);
            if let Err(e) = fs::remove_file(&self.tmp_path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.tmp_path.display(), error = %e,
                    "could not remove the temporary file of a failed backup");
            }
        }
    }
}

fn make_encoder(sink: HashingFile, compression: &Compression) -> io::Result<Encoder> {
    Ok(match *compression {
        Compression::Zstd { level, threads } => {
            let mut e = zstd::stream::write::Encoder::new(sink, level)?;
            // The frame checksum lets `zstd -t` (and our decoder) detect
            // corruption independently of the manifest's sha256.
            e.include_checksum(true)?;
            // At fast levels even one worker runs beside the thread that
            // reads the dump, so pg_dump's pipe keeps draining while a block
            // compresses (as the zstd command does). At slow levels the
            // overlap gains nothing, and compressing inline keeps a cancel
            // prompt: a worker's final flush cannot be interrupted.
            // 4 MiB jobs (zstd's default is 4x the window) keep memory near
            // 24 MiB per worker at the same ratio.
            if threads > 1 || (threads == 1 && level < 10) {
                e.multithread(threads)?;
                e.set_parameter(zstd::stream::raw::CParameter::JobSize(4 << 20))?;
            }
            Encoder::Zstd(e)
        }
        Compression::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
            sink,
            flate2::Compression::new(level.min(9)),
        )),
        Compression::None => Encoder::None(sink),
    })
}

/// `rename` that fails instead of silently replacing an existing generation
/// (two runs in the same second would otherwise overwrite each other).
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let c_to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without RENAME_NOREPLACE: check, then rename.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if to.symlink_metadata().is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", to.display()),
                ));
            }
            fs::rename(from, to)
        }
        _ => Err(err),
    }
}

/// Reads a stored generation back as the bytes the source produced.
pub fn open_decompressed(
    path: &Path,
    compression: &Compression,
) -> io::Result<Box<dyn Read + Send>> {
    let file = File::open(path).map_err(|e| annotate(e, "cannot open", path))?;
    decompress_reader(file, compression)
}

/// Wraps any stored-bytes reader (a file, a plugin's fetch stream) in the
/// matching decompressor.
pub fn decompress_reader<R: Read + Send + 'static>(
    reader: R,
    compression: &Compression,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match compression {
        Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::with_buffer(
            BufReader::with_capacity(BUFFER_SIZE, reader),
        )?),
        // MultiGz: `cat a.gz b.gz` and pigz output are valid gzip too.
        Compression::Gzip { .. } => Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(BUFFER_SIZE, reader),
        )),
        Compression::None => Box::new(BufReader::with_capacity(BUFFER_SIZE, reader)),
    })
}

/// Lowercase hex sha256 of a file's bytes, as `sha256sum` prints it.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let file = File::open(path).map_err(|e| annotate(e, "cannot open", path))?;
    sha256_reader(file).map_err(|e| annotate(e, "cannot read", path))
}

/// sha256 of everything `reader` yields, in fixed-size chunks.
pub fn sha256_reader<R: Read>(mut reader: R) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUFFER_SIZE];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `io::copy` with our fixed buffer size (std's is 8 KiB, which costs a lot of
/// syscalls on pipes carrying gigabytes).
pub fn copy_buffered<R: Read + ?Sized, W: Write + ?Sized>(
    reader: &mut R,
    writer: &mut W,
) -> io::Result<u64> {
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Deletes `.tmp-*` files and `.spool-*` directories a killed runner left in
/// a job folder. Only call it while holding the job's lock: a running backup
/// of the same job owns such names.
pub fn remove_stale_temporaries(job_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(job_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name.starts_with(TEMP_PREFIX) {
            fs::remove_file(&path)?;
            removed.push(path);
        } else if name.starts_with(SPOOL_PREFIX) {
            fs::remove_dir_all(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

pub(crate) fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(dir: &Path, name: &str, c: &Compression, data: &[u8]) -> Written {
        let mut w = GenerationWriter::create(dir, name, c).unwrap();
        for chunk in data.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.uncompressed_bytes(), data.len() as u64);
        w.finish().unwrap()
    }

    #[test]
    fn every_compression_round_trips_and_hashes_the_stored_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        for (i, c) in [
            Compression::Zstd {
                level: 3,
                threads: 1,
            },
            Compression::Zstd {
                level: 3,
                threads: 2,
            },
            Compression::Gzip { level: 6 },
            Compression::None,
        ]
        .iter()
        .enumerate()
        {
            let name = c.file_name(&format!("g{i}.sql"));
            let w = write_all(dir.path(), &name, c, &data);
            assert_eq!(w.path, dir.path().join(&name));
            assert_eq!(w.size, fs::metadata(&w.path).unwrap().len());
            assert_eq!(w.sha256, sha256_file(&w.path).unwrap());
            let mut back = Vec::new();
            open_decompressed(&w.path, c)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{c} round trip");
        }
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(TEMP_PREFIX)),
            "{names:?}"
        );
    }

    #[test]
    fn an_unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            GenerationWriter::create(dir.path(), "x.sql.zst", &Compression::default()).unwrap();
        w.write_all(b"partial").unwrap();
        assert!(w.tmp_path().exists());
        assert!(
            w.tmp_path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        );
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_generation_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), "x.sql", &Compression::None, b"one");
        let err = GenerationWriter::create(dir.path(), "x.sql", &Compression::None)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // Raced: the name appears between create and finish.
        let mut w = GenerationWriter::create(dir.path(), "y.sql", &Compression::None).unwrap();
        w.write_all(b"two").unwrap();
        fs::write(dir.path().join("y.sql"), "other").unwrap();
        assert!(w.finish().is_err());
        assert_eq!(
            fs::read_to_string(dir.path().join("y.sql")).unwrap(),
            "other"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "temp removed");
    }

    #[test]
    fn config_names_and_levels() {
        assert_eq!(
            Compression::from_config("gzip", None).unwrap(),
            Compression::Gzip { level: 6 }
        );
        assert!(matches!(
            Compression::from_config("zstd", Some(19)).unwrap(),
            Compression::Zstd { level: 19, .. }
        ));
        let e = Compression::from_config("xz", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("zstd (default), gzip, none"), "{e}");
        assert!(Compression::from_config("zstd", Some(30)).is_err());
        assert!(Compression::from_config("none", Some(3)).is_err());
        assert_eq!(Compression::None.file_name("a.tar"), "a.tar");
        assert_eq!(
            Compression::Gzip { level: 1 }.file_name("a.tar"),
            "a.tar.gz"
        );
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmp-a.sql.zst-1-0"), "x").unwrap();
        fs::create_dir(dir.path().join(".spool-a")).unwrap();
        fs::write(dir.path().join(".spool-a/database.dump"), "x").unwrap();
        fs::write(dir.path().join("a.sql.zst"), "keep").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap().len(), 2);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
