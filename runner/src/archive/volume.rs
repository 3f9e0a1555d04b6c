//! The volume format: a tar archive in which every member (its tar header,
//! content and padding) is its own run of zstd frames, ended by the tar
//! end-of-archive blocks and the zstd seekable format's seek table
//! (zstd `contrib/seekable_format/zstd_seekable_compression_format.md`).
//!
//! So `zstd -d < v | tar -t` lists a volume like any `.tar.zst` (the seek
//! table is a skippable frame, which decoders skip), and one member is read
//! by decompressing only its own byte range. The last member before the end
//! blocks, `.offsite/<volume>.catalog.jsonl`, is the volume's own slice of
//! the catalog (one frame), from which `catalog rebuild` works.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Decompressed bytes per frame at most: a large file becomes several
/// frames (the seek table counts frame sizes in u32).
pub const FRAME_DATA: u64 = 32 << 20;

/// Where the catalog slice lives inside a volume.
pub fn slice_member_path(volume: &str) -> String {
    format!(".offsite/{volume}.catalog.jsonl")
}

/// Skippable frame magic for the seek table, and the seekable footer magic.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// num_frames (4) + descriptor (1) + magic (4).
const FOOTER_LEN: u64 = 9;

/// One zstd frame as the seek table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub compressed: u32,
    pub decompressed: u32,
}

/// What appending one member wrote.
#[derive(Clone, Debug)]
pub struct Appended {
    /// Byte offset of the member's first frame in the volume.
    pub offset: u64,
    /// Compressed bytes of all the member's frames.
    pub clen: u64,
    /// Decompressed bytes before the content (the tar header blocks).
    pub header_len: u64,
    /// Of the content as written (zero-padded if the file shrank).
    pub sha256: String,
    /// The file gave fewer or more bytes than its size said.
    pub torn: bool,
    pub frames: Vec<Frame>,
}

/// Appends members to an open volume file. The file's length is always
/// `len` once a member is complete; a crash may leave a partial frame past
/// the last committed length, which [`VolumeWriter::open`] cuts off.
pub struct VolumeWriter {
    out: BufWriter<File>,
    len: u64,
    /// One compression context for every frame (level and checksum set
    /// once; each frame resets the session and pledges its exact size, so
    /// zstd sizes its tables to the member, not to a 2 MiB window).
    cctx: zstd::zstd_safe::CCtx<'static>,
    /// The copy buffer, reused by every member.
    buf: Vec<u8>,
}

impl VolumeWriter {
    /// Open (or create) the volume at `path`, truncated to `committed`
    /// bytes: whatever a crashed run appended after its last commit goes.
    pub fn open(path: &Path, committed: u64, level: i32) -> io::Result<VolumeWriter> {
        let file = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            0o600,
        )
        .open(path)?;
        let actual = file.metadata()?.len();
        if actual < committed {
            return Err(io::Error::other(format!(
                "{} holds {actual} bytes but the catalog committed {committed}: the open volume was cut short",
                path.display()
            )));
        }
        file.set_len(committed)?;
        let mut out = BufWriter::with_capacity(crate::pipeline::BUFFER_SIZE, file);
        out.seek(SeekFrom::Start(committed))?;
        let mut cctx = zstd::zstd_safe::CCtx::create();
        for p in [
            zstd::zstd_safe::CParameter::CompressionLevel(level),
            zstd::zstd_safe::CParameter::ChecksumFlag(true),
        ] {
            cctx.set_parameter(p)
                .map_err(|c| io::Error::other(zstd::zstd_safe::get_error_name(c)))?;
        }
        Ok(VolumeWriter {
            out,
            len: committed,
            cctx,
            buf: vec![0u8; crate::pipeline::BUFFER_SIZE],
        })
    }

    /// Bytes in the volume so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one member: `header` (tar header blocks) then exactly `size`
    /// bytes from `src` (zero-filled if `src` ends early), then tar padding.
    pub fn append(&mut self, header: &[u8], src: &mut dyn Read, size: u64) -> io::Result<Appended> {
        self.append_chunked(header, src, size, FRAME_DATA)
    }

    /// As [`append`](Self::append), with at most `frame_data` content bytes
    /// per frame (`u64::MAX`: one frame, as the catalog slice needs).
    pub fn append_chunked(
        &mut self,
        header: &[u8],
        src: &mut dyn Read,
        size: u64,
        frame_data: u64,
    ) -> io::Result<Appended> {
        let offset = self.len;
        let mut sha = Sha256::new();
        let mut frames = vec![];
        let mut left = size;
        let mut torn = false;
        let mut first = true;
        while first || left > 0 {
            let chunk = left.min(frame_data);
            let head = if first { header.len() as u64 } else { 0 };
            let pad = if left == chunk {
                (512 - size % 512) % 512
            } else {
                0
            };
            let d = head + chunk + pad;
            let mut enc = zstd::stream::write::Encoder::with_context(Vec::new(), &mut self.cctx);
            enc.set_pledged_src_size(Some(d))?;
            if first {
                enc.write_all(header)?;
                first = false;
            }
            let got = copy_exact(src, &mut enc, chunk, &mut sha, &mut self.buf)?;
            torn |= got < chunk;
            left -= chunk;
            if left == 0 {
                enc.write_all(&ZEROS[..pad as usize])?;
                // More bytes than `size` means the file grew while read.
                torn |= src.read(&mut self.buf[..1])? > 0;
            }
            let bytes = enc.finish()?;
            frames.push(self.put_frame(&bytes, d)?);
        }
        Ok(Appended {
            offset,
            clen: self.len - offset,
            header_len: header.len() as u64,
            sha256: hex::encode(sha.finalize()),
            torn,
            frames,
        })
    }

    /// Append `data` as exactly one frame (the catalog slice, the end blocks).
    pub fn append_frame(&mut self, parts: &[&[u8]]) -> io::Result<Frame> {
        let d: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut enc = zstd::stream::write::Encoder::with_context(Vec::new(), &mut self.cctx);
        enc.set_pledged_src_size(Some(d))?;
        for p in parts {
            enc.write_all(p)?;
        }
        let bytes = enc.finish()?;
        self.put_frame(&bytes, d)
    }

    /// Write the seek table for `frames` (every frame in the volume, in
    /// order), flush and fsync. The volume is complete after this.
    pub fn finish(mut self, frames: impl Iterator<Item = Frame>) -> io::Result<File> {
        let mut entries = Vec::new();
        let mut n: u32 = 0;
        for f in frames {
            entries.extend_from_slice(&f.compressed.to_le_bytes());
            entries.extend_from_slice(&f.decompressed.to_le_bytes());
            n += 1;
        }
        let size = entries.len() as u64 + FOOTER_LEN;
        let size = u32::try_from(size).map_err(|_| io::Error::other("seek table too large"))?;
        self.out.write_all(&SKIPPABLE_MAGIC.to_le_bytes())?;
        self.out.write_all(&size.to_le_bytes())?;
        self.out.write_all(&entries)?;
        self.out.write_all(&n.to_le_bytes())?;
        self.out.write_all(&[0u8])?; // descriptor: no per-frame checksums
        self.out.write_all(&SEEKABLE_MAGIC.to_le_bytes())?;
        self.sync()?;
        self.out.into_inner().map_err(|e| e.into_error())
    }

    /// Flush and fsync what was appended (a run's commit point).
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    /// Write one finished frame (`decompressed` bytes before compression).
    fn put_frame(&mut self, bytes: &[u8], decompressed: u64) -> io::Result<Frame> {
        self.out.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(Frame {
            compressed: bytes.len() as u32,
            decompressed: decompressed as u32,
        })
    }
}

/// Tar padding (at most 511 zero bytes).
static ZEROS: [u8; 512] = [0; 512];

/// Copy up to `n` bytes from `src` to `dst`, hashing them; if `src` ends
/// early, write zeros for the rest. Returns the bytes `src` gave.
fn copy_exact(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    n: u64,
    sha: &mut Sha256,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut got = 0u64;
    while got < n {
        let want = (n - got).min(buf.len() as u64) as usize;
        let r = match src.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha.update(&buf[..r]);
        dst.write_all(&buf[..r])?;
        got += r as u64;
    }
    let zeros = [0u8; 4096];
    let mut left = n - got;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        sha.update(&zeros[..k]);
        dst.write_all(&zeros[..k])?;
        left -= k as u64;
    }
    Ok(got)
}

/// The tar header blocks for one regular file (GNU long-name records when
/// the path does not fit), built by the `tar` crate.
pub fn tar_header(path: &[u8], meta: &TarMeta) -> io::Result<Vec<u8>> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(meta.size);
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(meta.uid as u64);
    h.set_gid(meta.gid as u64);
    h.set_mtime(meta.mtime_secs.max(0) as u64);
    let rel = path.strip_prefix(b"/").unwrap_or(path);
    let rel = std::ffi::OsStr::from_bytes(rel);
    let mut b = tar::Builder::new(Vec::new());
    // Header only: the content follows in the same frame(s), written by
    // the caller; `append_data` writes the long-name records it needs.
    b.append_data(&mut h, rel, io::empty())?;
    let bytes = std::mem::take(b.get_mut());
    drop(b.into_inner());
    Ok(bytes)
}

use std::os::unix::ffi::OsStrExt;

/// What a tar header records of a file.
pub struct TarMeta {
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_secs: i64,
}

/// The tar end-of-archive marker: two zero blocks.
pub const TAR_END: [u8; 1024] = [0u8; 1024];

/// Stream one member's content from a volume: `file` positioned anywhere;
/// reads `[offset, offset + clen)`, skips `header_len` bytes, copies `size`
/// bytes to `out`, and checks them against `sha256`. Returns bytes copied.
pub fn read_member(
    file: &mut dyn ReadSeek,
    m: &MemberRange,
    out: &mut dyn Write,
) -> io::Result<u64> {
    file.seek(SeekFrom::Start(m.offset))?;
    read_member_from(&mut (file as &mut dyn Read).take(m.clen), m, out)
}

/// As [`read_member`], from a reader already at the member's first frame
/// (e.g. a ranged fetch of exactly its bytes).
pub fn read_member_from(
    src: &mut dyn Read,
    m: &MemberRange,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let mut dec = zstd::stream::read::Decoder::new(src)?;
    io::copy(&mut (&mut dec).take(m.header_len), &mut io::sink())?;
    let mut sha = Sha256::new();
    let mut hashing = HashingWrite {
        inner: out,
        sha: &mut sha,
    };
    let n = io::copy(&mut (&mut dec).take(m.size), &mut hashing)?;
    if n != m.size {
        return Err(io::Error::other(format!(
            "the volume ended after {n} of the member's {} bytes",
            m.size
        )));
    }
    let got = hex::encode(sha.finalize());
    if got != m.sha256 {
        return Err(io::Error::other(format!(
            "the member's sha256 is {got}, the catalog says {}: the volume is damaged",
            m.sha256
        )));
    }
    Ok(n)
}

pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// Where a member's bytes are in its volume and what they must hash to.
#[derive(Clone, Debug)]
pub struct MemberRange {
    pub offset: u64,
    pub clen: u64,
    pub header_len: u64,
    pub size: u64,
    pub sha256: String,
}

struct HashingWrite<'a> {
    inner: &'a mut dyn Write,
    sha: &'a mut Sha256,
}

impl Write for HashingWrite<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.sha.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Read a sealed volume's seek table from its tail: `tail` is the last
/// bytes of the volume (at least the whole table). Returns the frames.
pub fn parse_seek_table(tail: &[u8]) -> io::Result<Vec<Frame>> {
    let bad = |why: &str| io::Error::other(format!("not a sealed volume: {why}"));
    if (tail.len() as u64) < FOOTER_LEN + 8 {
        return Err(bad("too short for a seek table"));
    }
    let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let foot = &tail[tail.len() - FOOTER_LEN as usize..];
    if le(&foot[5..9]) != SEEKABLE_MAGIC {
        return Err(bad("no seekable footer"));
    }
    let n = le(&foot[0..4]) as usize;
    let entry = if foot[4] & 0x80 != 0 { 12 } else { 8 };
    let table = n * entry + FOOTER_LEN as usize;
    if tail.len() < table + 8 {
        return Err(bad("seek table longer than the bytes given"));
    }
    let start = tail.len() - table;
    if le(&tail[start - 8..]) != SKIPPABLE_MAGIC {
        return Err(bad("seek table frame has no skippable magic"));
    }
    Ok((0..n)
        .map(|i| {
            let e = &tail[start + i * entry..];
            Frame {
                compressed: le(&e[0..4]),
                decompressed: le(&e[4..8]),
            }
        })
        .collect())
}

/// Bytes of the seek table (skippable frame) for `frames` frames.
pub fn seek_table_len(frames: u64) -> u64 {
    8 + frames * 8 + FOOTER_LEN
}

/// The number of frames a sealed volume's footer announces (`tail` = at
/// least its last 9 bytes).
pub fn footer_frames(tail: &[u8]) -> io::Result<u64> {
    if tail.len() < FOOTER_LEN as usize {
        return Err(io::Error::other("not a sealed volume: too short"));
    }
    let foot = &tail[tail.len() - FOOTER_LEN as usize..];
    let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if le(&foot[5..9]) != SEEKABLE_MAGIC {
        return Err(io::Error::other("not a sealed volume: no seekable footer"));
    }
    Ok(le(&foot[0..4]) as u64)
}

/// The catalog slice of a sealed local volume: `(offset, compressed len)`
/// of its frame, found through the seek table (the slice is the frame
/// before the tar end blocks).
pub fn slice_frame(file: &mut File) -> io::Result<(u64, u64)> {
    let total = file.metadata()?.len();
    let mut foot = [0u8; FOOTER_LEN as usize];
    file.seek(SeekFrom::Start(total.saturating_sub(FOOTER_LEN)))?;
    file.read_exact(&mut foot)?;
    let n = footer_frames(&foot)?;
    let tlen = seek_table_len(n);
    let mut tail = vec![0u8; tlen as usize];
    file.seek(SeekFrom::Start(total - tlen))?;
    file.read_exact(&mut tail)?;
    let frames = parse_seek_table(&tail)?;
    slice_of(&frames)
}

/// `(offset, compressed len)` of the slice frame given all frames.
pub fn slice_of(frames: &[Frame]) -> io::Result<(u64, u64)> {
    if frames.len() < 2 {
        return Err(io::Error::other("not a sealed volume: fewer than 2 frames"));
    }
    let k = frames.len() - 2;
    let offset: u64 = frames[..k].iter().map(|f| f.compressed as u64).sum();
    Ok((offset, frames[k].compressed as u64))
}

/// Open the catalog slice in its frame: `src` yields the frame's
/// compressed bytes; the result yields the slice's JSON lines, streamed.
pub fn read_slice<'a>(src: Box<dyn Read + 'a>) -> io::Result<impl io::BufRead + 'a> {
    let mut dec = zstd::stream::read::Decoder::new(src)?.single_frame();
    let mut block = [0u8; 512];
    loop {
        dec.read_exact(&mut block)?;
        let h = tar::Header::from_byte_slice(&block);
        let size = h.size()?;
        if h.entry_type() == tar::EntryType::GNULongName {
            // The long name's blocks, then the member's own header.
            let padded = size.div_ceil(512) * 512;
            io::copy(&mut (&mut dec).take(padded), &mut io::sink())?;
            continue;
        }
        return Ok(io::BufReader::new(dec.take(size)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> TarMeta {
        TarMeta {
            size,
            mode: 0o640,
            uid: 0,
            gid: 0,
            mtime_secs: 1_700_000_000,
        }
    }

    #[test]
    fn members_read_back_and_the_seek_table_lays_out_every_frame() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.tar.zst");
        let mut w = VolumeWriter::open(&p, 0, 3).unwrap();
        let a = b"hello world".to_vec();
        let long = format!("/calls/{}/rec.wav", "d".repeat(150));
        let b: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let ma = w
            .append(
                &tar_header(b"/calls/a.wav", &meta(a.len() as u64)).unwrap(),
                &mut &a[..],
                a.len() as u64,
            )
            .unwrap();
        let mb = w
            .append(
                &tar_header(long.as_bytes(), &meta(b.len() as u64)).unwrap(),
                &mut &b[..],
                b.len() as u64,
            )
            .unwrap();
        let mut frames: Vec<Frame> = ma.frames.iter().chain(&mb.frames).copied().collect();
        frames.push(
            w.append_frame(&[
                &tar_header(b"/.offsite/s", &meta(2)).unwrap(),
                b"{}",
                &[0u8; 510],
            ])
            .unwrap(),
        );
        frames.push(w.append_frame(&[&TAR_END]).unwrap());
        let mut f = w.finish(frames.clone().into_iter()).unwrap();
        // The seek table read back from the tail, as a reader of the zstd
        // seekable format does: the frame sizes we logged, in order.
        let bytes = std::fs::read(&p).unwrap();
        let n = footer_frames(&bytes).unwrap();
        assert_eq!(n as usize, frames.len());
        let table = &bytes[bytes.len() - seek_table_len(n) as usize..];
        assert_eq!(parse_seek_table(table).unwrap(), frames);
        assert_eq!(
            frames.iter().map(|f| f.compressed as u64).sum::<u64>() + seek_table_len(n),
            bytes.len() as u64
        );
        let (off, _) = slice_frame(&mut f).unwrap();
        assert_eq!(off, ma.clen + mb.clen);
        for (m, data) in [(&ma, &a), (&mb, &b)] {
            let r = MemberRange {
                offset: m.offset,
                clen: m.clen,
                header_len: m.header_len,
                size: data.len() as u64,
                sha256: m.sha256.clone(),
            };
            let mut out = vec![];
            read_member(&mut f, &r, &mut out).unwrap();
            assert_eq!(&out, data);
        }
        // A plain tar reader sees both members with their names.
        let bytes = std::fs::read(&p).unwrap();
        let dec = zstd::stream::decode_all(&bytes[..]).unwrap();
        let mut ar = tar::Archive::new(&dec[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            vec![
                "calls/a.wav".to_string(),
                long[1..].to_string(),
                ".offsite/s".into()
            ]
        );
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_padded_and_marked_torn() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = VolumeWriter::open(&dir.path().join("v"), 0, 1).unwrap();
        let data = vec![7u8; 1000];
        let m = w
            .append(
                &tar_header(b"/x", &meta(4000)).unwrap(),
                &mut &data[..],
                4000,
            )
            .unwrap();
        assert!(m.torn);
        let m2 = w
            .append(&tar_header(b"/y", &meta(10)).unwrap(), &mut &data[..], 10)
            .unwrap();
        assert!(
            m2.torn,
            "a file longer than its stat size changed while read"
        );
    }

    #[test]
    fn reopening_cuts_what_was_appended_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        let mut w = VolumeWriter::open(&p, 0, 1).unwrap();
        w.append(&tar_header(b"/x", &meta(3)).unwrap(), &mut &b"abc"[..], 3)
            .unwrap();
        w.sync().unwrap();
        let committed = w.len();
        w.append(&tar_header(b"/y", &meta(3)).unwrap(), &mut &b"def"[..], 3)
            .unwrap();
        w.sync().unwrap();
        drop(w);
        let w = VolumeWriter::open(&p, committed, 1).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), committed);
        assert_eq!(w.len(), committed);
        assert!(VolumeWriter::open(&p, committed + 1, 1).is_err());
    }
}
