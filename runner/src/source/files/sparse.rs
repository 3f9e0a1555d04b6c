//! Sparse files into tar members in the old GNU sparse format (type `S`),
//! which GNU tar, bsdtar and the `tar` crate's reader all understand; the
//! `tar` crate's `Entry::unpack` recreates the holes by seeking.
//!
//! The `tar` crate can write this format too, but only from `append_file`,
//! which copies whatever the file holds when read: a file that shrinks
//! meanwhile leaves a member shorter than its header promised and the rest
//! of the archive unreadable. Here the map is taken once (SEEK_DATA /
//! SEEK_HOLE, `lseek(2)`), the header is built from it with the crate's own
//! `GnuSparseHeader`/`GnuExtSparseHeader` types, and the member's data is
//! read by [`crate::source::files`] with exactly the sizes the map gave.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Data runs of a file, `(offset, length)` in bytes, ascending, not
/// overlapping; everything between them is a hole.
pub type DataMap = Vec<(u64, u64)>;

/// Tar's block: sparse runs start on it so every run's data starts on a
/// block boundary inside the archive (the readers check this).
const BLOCK: u64 = 512;

/// The data runs of `file` (of `size` bytes), or `None` when it has no hole
/// worth keeping or the filesystem cannot say (then it is stored dense).
///
/// Runs are widened to 512-byte boundaries (a hole smaller than that after
/// widening disappears); the last run may end at `size` unaligned. A file
/// that is all hole gets one empty run at `size`, which GNU tar writes the
/// same way.
pub fn data_map(file: &File, size: u64) -> io::Result<Option<DataMap>> {
    let fd = file.as_raw_fd();
    let seek = |off: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let r = unsafe { libc::lseek(fd, off as libc::off_t, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // ENXIO: no data (or hole) at or after `off`.
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(r as u64))
    };
    let mut runs: DataMap = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(pos, libc::SEEK_DATA) {
            Ok(Some(s)) if s < size => s,
            Ok(_) => break,
            // EINVAL: the filesystem does not support SEEK_DATA.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        let a = start / BLOCK * BLOCK;
        let b = end.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
        match runs.last_mut() {
            Some(last) if last.0 + last.1 >= a => last.1 = b.max(last.0 + last.1) - last.0,
            _ => runs.push((a, b - a)),
        }
        pos = end.max(start + 1);
    }
    // Back to the start for the reader.
    seek(0, libc::SEEK_SET)?;
    let data: u64 = runs.iter().map(|r| r.1).sum();
    if data == size {
        return Ok(None);
    }
    if runs.last().is_none_or(|&(o, l)| o + l < size) {
        // GNU tar marks the real end with an empty run.
        runs.push((size, 0));
    }
    Ok(Some(runs))
}

/// Bytes of data (what the archive stores) in `map`.
pub fn stored_size(map: &DataMap) -> u64 {
    map.iter().map(|r| r.1).sum()
}

/// Turns `header` (a GNU header, metadata already set) into a sparse member
/// header for `map` of a file of `real_size` bytes, and returns the
/// extension blocks that must follow it before the data (512 bytes each).
pub fn make_sparse_header(
    header: &mut tar::Header,
    map: &DataMap,
    real_size: u64,
) -> io::Result<Vec<u8>> {
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(stored_size(map));
    let gnu = header
        .as_gnu_mut()
        .ok_or_else(|| io::Error::other("a sparse member needs a GNU header"))?;
    gnu.set_real_size(real_size);
    let (first, rest) = map.split_at(map.len().min(gnu.sparse.len()));
    for (slot, &(off, len)) in gnu.sparse.iter_mut().zip(first) {
        slot.set_offset(off);
        slot.set_length(len);
    }
    gnu.set_is_extended(!rest.is_empty());
    let mut ext_blocks = Vec::new();
    let chunks: Vec<_> = rest.chunks(21).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut ext = tar::GnuExtSparseHeader::new();
        for (slot, &(off, len)) in ext.sparse_mut().iter_mut().zip(chunk.iter()) {
            slot.set_offset(off);
            slot.set_length(len);
        }
        ext.set_is_extended(i + 1 < chunks.len());
        ext_blocks.extend_from_slice(ext.as_bytes());
    }
    Ok(ext_blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::{FileExt, MetadataExt};

    const MIB: u64 = 1 << 20;

    fn sparse_file(dir: &std::path::Path, size: u64, runs: &[(u64, &[u8])]) -> File {
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("sparse"))
            .unwrap();
        f.set_len(size).unwrap();
        for (off, data) in runs {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(data).unwrap();
        }
        f.sync_all().unwrap();
        f
    }

    #[test]
    fn map_finds_the_data_runs_and_marks_the_end() {
        let dir = tempfile::tempdir_in(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .unwrap();
        let f = sparse_file(
            dir.path(),
            64 * MIB,
            &[(MIB, b"abc"), (10 * MIB, &[7u8; 9000])],
        );
        let Some(map) = data_map(&f, 64 * MIB).unwrap() else {
            // A filesystem without SEEK_DATA: nothing to check here.
            return;
        };
        assert_eq!(map.first().unwrap().0, MIB, "{map:?}");
        assert!(
            map.iter()
                .any(|&(o, l)| o <= 10 * MIB && o + l >= 10 * MIB + 9000)
        );
        assert_eq!(*map.last().unwrap(), (64 * MIB, 0));
        assert!(stored_size(&map) < MIB, "{map:?}");
        for &(o, _) in &map {
            assert_eq!(o % BLOCK, 0);
        }
    }

    #[test]
    fn dense_files_have_no_map() {
        let dir = tempfile::tempdir_in(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .unwrap();
        let f = sparse_file(dir.path(), 10_000, &[(0, &[1u8; 10_000])]);
        assert_eq!(data_map(&f, 10_000).unwrap(), None);
    }

    /// Many runs (extension blocks), written with our header and read back
    /// by the `tar` crate, which recreates the holes.
    #[test]
    fn sparse_member_round_trips_through_the_tar_reader() {
        let dir = tempfile::tempdir_in(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .unwrap();
        let size = 200 * MIB;
        let runs: Vec<(u64, Vec<u8>)> = (0..40u64)
            .map(|i| (i * 5 * MIB + 4096, vec![i as u8 + 1; 700]))
            .collect();
        let refs: Vec<(u64, &[u8])> = runs.iter().map(|(o, d)| (*o, d.as_slice())).collect();
        let f = sparse_file(dir.path(), size, &refs);
        let Some(map) = data_map(&f, size).unwrap() else {
            return;
        };
        assert!(map.len() > 25, "needs extension blocks: {map:?}");
        let mut header = tar::Header::new_gnu();
        header.set_path("vm.img").unwrap();
        header.set_mode(0o600);
        let ext = make_sparse_header(&mut header, &map, size).unwrap();
        header.set_cksum();
        let mut body = ext.clone();
        for &(o, l) in &map {
            let mut buf = vec![0u8; l as usize];
            f.read_exact_at(&mut buf, o).unwrap();
            body.extend_from_slice(&buf);
        }
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header, body.as_slice()).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(bytes.len() < 2 * MIB as usize);

        let out = dir.path().join("out");
        let mut ar = tar::Archive::new(bytes.as_slice());
        let mut entry = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.size(), size);
        entry.unpack(&out).unwrap();
        let m = std::fs::metadata(&out).unwrap();
        assert_eq!(m.len(), size);
        assert!(
            m.blocks() * 512 < 8 * MIB,
            "holes were filled: {} blocks",
            m.blocks()
        );
        let mut got = File::open(&out).unwrap();
        let mut orig = File::open(dir.path().join("sparse")).unwrap();
        let (mut a, mut b) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
        loop {
            let n = orig.read(&mut a).unwrap();
            got.read_exact(&mut b[..n]).unwrap();
            assert!(a[..n] == b[..n]);
            if n == 0 {
                break;
            }
        }
    }
}
