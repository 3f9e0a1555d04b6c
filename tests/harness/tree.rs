//! A file tree with everything GNU tar `--sparse --xattrs --acls` keeps
//! ([`make_tree`]), and an oracle that compares two trees by content and
//! full metadata ([`compare_trees`]): type, mode, uid, gid, mtime to the
//! nanosecond, size, content, allocated blocks of sparse files, link count
//! and which names share an inode, symlink targets, device numbers,
//! extended attributes and POSIX ACLs. Names are compared as bytes.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// `path` from raw bytes below `root`.
pub fn bpath(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

/// Sets atime and mtime (seconds, nanoseconds) of `p` itself, not of a
/// symlink's target.
pub fn set_time_ns(p: &Path, sec: i64, nsec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = [t, t];
    // SAFETY: valid path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    let r = unsafe { libc::lchown(c.as_ptr(), uid, gid) };
    assert_eq!(r, 0, "lchown {}", p.display());
}

/// The kernel's binary POSIX ACL (`system.posix_acl_*` value) from
/// `(tag, perm, id)` entries; tags: 1 user_obj, 2 user, 4 group_obj,
/// 8 group, 0x10 mask, 0x20 other.
pub fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const NO_ID: u32 = u32::MAX;

/// A sparse file of `size` bytes with `data` written at each offset.
pub fn make_sparse(p: &Path, size: u64, data: &[(u64, Vec<u8>)]) {
    let mut f = File::create(p).unwrap();
    f.set_len(size).unwrap();
    for (off, d) in data {
        f.seek(SeekFrom::Start(*off)).unwrap();
        f.write_all(d).unwrap();
    }
    f.sync_all().unwrap();
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut v);
    v
}

/// Builds the tree under `root` (created). Needs root (owners, device
/// node) and a filesystem with user xattrs, ACLs and holes (ext4 here).
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    let w = |rel: &[u8], data: &[u8]| fs::write(bpath(root, rel), data).unwrap();
    let d = |rel: &[u8]| fs::create_dir_all(bpath(root, rel)).unwrap();

    // Names that are not UTF-8, two differing only in a non-UTF-8 byte.
    w(b"caf\xe9.txt", b"latin-1 name");
    w(b"x\xfe", b"first");
    w(b"x\xff", b"second");
    d(b"Gr\xfc\xdfe");
    w(b"Gr\xfc\xdfe/f", b"inner");
    // Names tools trip over.
    w(b"new\nline", b"newline in the name");
    w(b"-rf", b"leading dash");
    w(b"--help", b"two dashes");
    w(b" spaced ", b"spaces");
    w(b"back\\slash", b"backslash");
    let c255 = vec![b'n'; 255];
    w(&c255, b"255-byte component");
    // A path far over 100 bytes, with a long non-UTF-8 component in it.
    let mut deep = b"deep/".to_vec();
    for i in 0..6 {
        deep.extend_from_slice(format!("level-{i}-{}", "d".repeat(40)).as_bytes());
        deep.push(b'/');
    }
    deep.extend_from_slice(b"\xe9t\xe9-");
    deep.extend_from_slice(&[b'z'; 200]);
    d(&deep);
    let mut deep_file = deep.clone();
    deep_file.extend_from_slice(b"/file-at-the-bottom.txt");
    w(&deep_file, b"deep down");

    // Ordinary data, empty file, empty directories.
    w(b"random.bin", &random(MIB as usize + 123));
    w(b"empty", b"");
    d(b"empty-dir");
    d(b"empty-dir-0700");

    // Hard links: two names in one folder, one in another, one at a long path.
    d(b"links");
    w(b"links/a", b"one inode, many names");
    fs::hard_link(root.join("links/a"), root.join("links/b")).unwrap();
    fs::hard_link(root.join("links/a"), root.join("other-name-for-a")).unwrap();
    let mut deep_link = deep.clone();
    deep_link.extend_from_slice(b"/hard-link-to-a");
    fs::hard_link(root.join("links/a"), bpath(root, &deep_link)).unwrap();
    w(b"links/solo", b"nlink 1");

    // Symlinks: relative, absolute dangling, a trailing slash, a long and a
    // non-UTF-8 target, a link to a directory.
    std::os::unix::fs::symlink("links/a", root.join("sym-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("sym-dangling")).unwrap();
    std::os::unix::fs::symlink("empty-dir/", root.join("sym-slash")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(&deep_file), root.join("sym-long")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9.txt"), root.join("sym-latin1")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"Gr\xfc\xdfe"), root.join("sym-dir")).unwrap();

    // FIFO and a character device (null's numbers).
    let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let dev = CString::new(root.join("null-dev").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) },
        0,
        "mknod: {}",
        std::io::Error::last_os_error()
    );

    // Sparse files: data at a few offsets, all hole, data at the very end.
    make_sparse(
        &root.join("vm.img"),
        256 * MIB,
        &[
            (0, random(4096)),
            (MIB + 512, random(70_000)),
            (100 * MIB, random(MIB as usize)),
        ],
    );
    make_sparse(&root.join("all-hole"), 16 * MIB, &[]);
    make_sparse(
        &root.join("tail-data"),
        32 * MIB,
        &[(32 * MIB - 1000, random(1000))],
    );

    // Extended attributes (binary value, empty value) and ACLs.
    xattr::set(
        root.join("random.bin"),
        "user.checksum",
        b"\x00\x01binary\xff",
    )
    .unwrap();
    xattr::set(root.join("random.bin"), "user.empty", b"").unwrap();
    xattr::set(
        bpath(root, b"Gr\xfc\xdfe"),
        "user.dir-attr",
        b"on a directory",
    )
    .unwrap();
    xattr::set(root.join("vm.img"), "user.kind", b"sparse").unwrap();
    xattr::set(
        root.join("links/solo"),
        "system.posix_acl_access",
        &acl_xattr(&[
            (1, 6, NO_ID),
            (2, 4, 1000),
            (4, 4, NO_ID),
            (0x10, 4, NO_ID),
            (0x20, 0, NO_ID),
        ]),
    )
    .unwrap();
    // uid 10 and gid 10 put a newline byte into the binary ACL; a user
    // attribute holding newlines and what looks like a record.
    w(b"acl-uid-10", b"acl naming uid 10");
    xattr::set(
        root.join("acl-uid-10"),
        "system.posix_acl_access",
        &acl_xattr(&[
            (1, 6, NO_ID),
            (2, 6, 10),
            (4, 4, NO_ID),
            (8, 4, 10),
            (0x10, 6, NO_ID),
            (0x20, 4, NO_ID),
        ]),
    )
    .unwrap();
    xattr::set(
        root.join("acl-uid-10"),
        "user.multi",
        b"line 1\n35 SCHILY.xattr.user.evil=injected\n",
    )
    .unwrap();
    d(b"acl-dir");
    xattr::set(
        root.join("acl-dir"),
        "system.posix_acl_default",
        &acl_xattr(&[
            (1, 7, NO_ID),
            (4, 5, NO_ID),
            (8, 5, 2000),
            (0x10, 5, NO_ID),
            (0x20, 0, NO_ID),
        ]),
    )
    .unwrap();

    // Owners: a user that has a name, and ids that have none.
    lchown(&root.join("links/solo"), 65534, 65534);
    lchown(&root.join("random.bin"), 4321, 8765);
    lchown(&root.join("sym-rel"), 4321, 8765);
    lchown(&root.join("empty-dir"), 1000, 1000);

    // Modes: setuid, setgid, sticky, nothing at all.
    for (rel, mode) in [
        (&b"caf\xe9.txt"[..], 0o4755),
        (b"-rf", 0o2750),
        (b"empty", 0),
        (b"x\xfe", 0o600),
        (b"empty-dir-0700", 0o700),
        (b"acl-dir", 0o1777),
        (b"links", 0o2775),
    ] {
        fs::set_permissions(bpath(root, rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    // The ACL'd file's group bits are its mask: set after the ACL.
    fs::set_permissions(root.join("links/solo"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(root.join("acl-uid-10"), fs::Permissions::from_mode(0o664)).unwrap();

    // Distinct mtimes with nanoseconds on everything, deepest first so a
    // folder's time is not bumped by its children afterwards.
    let mut all = Vec::new();
    walk_paths(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for (i, p) in all.iter().enumerate() {
        set_time_ns(
            p,
            1_500_000_000 + 7919 * i as i64,
            1 + 123_457 * i as i64 % 999_999_999,
        );
    }
}

fn walk_paths(p: &Path, out: &mut Vec<PathBuf>) {
    out.push(p.to_path_buf());
    let m = fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            walk_paths(&e.unwrap().path(), out);
        }
    }
}

/// Data runs of a file (SEEK_DATA/SEEK_HOLE), `(start, end)`.
fn data_runs(f: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0i64;
    while (pos as u64) < size {
        // SAFETY: lseek on our descriptor.
        let s = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if s < 0 {
            break;
        }
        // SAFETY: as above.
        let e = unsafe { libc::lseek(fd, s, libc::SEEK_HOLE) };
        let e = if e < 0 { size as i64 } else { e };
        out.push((s as u64, e as u64));
        pos = e.max(s + 1);
    }
    out
}

/// Content of two regular files equal? Reads only where either has data
/// (a hole in both is zeros in both), so a 4 GiB sparse file costs little.
fn same_content(a: &Path, b: &Path, size: u64) -> Result<(), String> {
    let fa = File::open(a).map_err(|e| format!("{e}"))?;
    let fb = File::open(b).map_err(|e| format!("{e}"))?;
    let mut runs = data_runs(&fa, size);
    runs.extend(data_runs(&fb, size));
    runs.sort();
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    let mut done = 0u64;
    for (s, e) in runs {
        let mut pos = s.max(done);
        while pos < e {
            let n = (e - pos).min(MIB) as usize;
            fa.read_exact_at(&mut ba[..n], pos)
                .map_err(|e| format!("{e}"))?;
            fb.read_exact_at(&mut bb[..n], pos)
                .map_err(|e| format!("{e}"))?;
            if ba[..n] != bb[..n] {
                return Err(format!(
                    "content differs in bytes {pos}..{}",
                    pos + n as u64
                ));
            }
            pos += n as u64;
        }
        done = done.max(e);
    }
    Ok(())
}

fn xattrs_of(p: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(names) = xattr::list(p) {
        for n in names {
            if let Ok(Some(v)) = xattr::get(p, &n) {
                out.insert(n, v);
            }
        }
    }
    out
}

/// Every path below `root` (relative, as bytes; the root is `""`).
fn listing(root: &Path) -> BTreeSet<Vec<u8>> {
    let mut all = Vec::new();
    walk_paths(root, &mut all);
    all.iter()
        .map(|p| {
            p.strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        })
        .collect()
}

/// Differences between the tree at `src` and the one at `dst`, one line
/// each; empty when they are the same tree.
pub fn compare_trees(src: &Path, dst: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    let a = listing(src);
    let b = listing(dst);
    let show = |rel: &[u8]| format!("{:?}", OsStr::from_bytes(rel));
    for missing in a.difference(&b) {
        diffs.push(format!("{}: missing from the copy", show(missing)));
    }
    for extra in b.difference(&a) {
        diffs.push(format!("{}: in the copy only", show(extra)));
    }
    // Source inode → copy inode: names sharing one must share the other.
    let mut inodes: HashMap<u64, u64> = HashMap::new();
    let mut back: HashMap<u64, u64> = HashMap::new();
    for rel in a.intersection(&b) {
        let (pa, pb) = (bpath(src, rel), bpath(dst, rel));
        let name = show(rel);
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        let (ta, tb) = (ma.file_type(), mb.file_type());
        let kind = |t: fs::FileType| {
            if t.is_dir() {
                "directory"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_file() {
                "file"
            } else if t.is_fifo() {
                "fifo"
            } else if t.is_char_device() {
                "char device"
            } else if t.is_block_device() {
                "block device"
            } else {
                "socket"
            }
        };
        if kind(ta) != kind(tb) {
            diffs.push(format!("{name}: {} became {}", kind(ta), kind(tb)));
            continue;
        }
        let mut field = |what: &str, x: String, y: String| {
            if x != y {
                diffs.push(format!("{name}: {what} {x} → {y}"));
            }
        };
        if !ta.is_symlink() {
            field(
                "mode",
                format!("{:o}", ma.mode() & 0o7777),
                format!("{:o}", mb.mode() & 0o7777),
            );
        }
        field("uid", ma.uid().to_string(), mb.uid().to_string());
        field("gid", ma.gid().to_string(), mb.gid().to_string());
        field(
            "mtime",
            format!("{}.{:09}", ma.mtime(), ma.mtime_nsec()),
            format!("{}.{:09}", mb.mtime(), mb.mtime_nsec()),
        );
        field(
            "xattrs",
            format!("{:?}", xattrs_of(&pa)),
            format!("{:?}", xattrs_of(&pb)),
        );
        if ta.is_symlink() {
            field(
                "target",
                format!("{:?}", fs::read_link(&pa).unwrap()),
                format!("{:?}", fs::read_link(&pb).unwrap()),
            );
        }
        if ta.is_char_device() || ta.is_block_device() {
            field("rdev", ma.rdev().to_string(), mb.rdev().to_string());
        }
        if ta.is_file() {
            field("size", ma.len().to_string(), mb.len().to_string());
            field("link count", ma.nlink().to_string(), mb.nlink().to_string());
            if ma.len() == mb.len()
                && let Err(e) = same_content(&pa, &pb, ma.len())
            {
                diffs.push(format!("{name}: {e}"));
            }
            // A sparse source must stay sparse: allowed a little slack for
            // block rounding, not the holes.
            let (ua, ub) = (ma.blocks() * 512, mb.blocks() * 512);
            if ua < ma.len() && ub > ua + 256 * 1024 {
                diffs.push(format!(
                    "{name}: holes filled: {ua} bytes allocated in the source, {ub} in the copy"
                ));
            }
            if ma.nlink() > 1 {
                let prev_b = inodes.insert(ma.ino(), mb.ino());
                let prev_a = back.insert(mb.ino(), ma.ino());
                if prev_b.is_some_and(|x| x != mb.ino()) || prev_a.is_some_and(|x| x != ma.ino()) {
                    diffs.push(format!(
                        "{name}: hard links do not share the same inode in the copy"
                    ));
                }
            }
        }
    }
    diffs
}

/// Asserts the trees are the same, listing every difference.
pub fn assert_same_tree(src: &Path, dst: &Path, what: &str) {
    let diffs = compare_trees(src, dst);
    assert!(
        diffs.is_empty(),
        "{what}: {} differences between {} and {}:\n{}",
        diffs.len(),
        src.display(),
        dst.display(),
        diffs.join("\n")
    );
}

/// Where a tree backed up from `src` lands below a `--to-dir` target.
pub fn restored_root(to_dir: &Path, src: &Path) -> PathBuf {
    to_dir.join(src.strip_prefix("/").unwrap())
}

/// Bytes allocated on disk for `p` (what `du` shows).
pub fn allocated(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().blocks() * 512
}

/// Raw bytes name helper for tests: `OsString` from bytes.
pub fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}
