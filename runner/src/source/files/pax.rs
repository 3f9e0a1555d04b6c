//! What a ustar/GNU header cannot hold, in a POSIX.1-2001 pax extended
//! header (`x`) before the member, with the keywords GNU tar uses:
//!
//! - `mtime` with nanoseconds (`1577836800.123456789`);
//! - `SCHILY.xattr.NAME` for every extended attribute, value as raw bytes
//!   (this includes `system.posix_acl_access` / `system.posix_acl_default`,
//!   the kernel's binary form of POSIX ACLs);
//! - `SCHILY.acl.access` / `SCHILY.acl.default`: the same ACLs as text
//!   (`user::rw-,user:1000:r--,…`), which `tar --acls` applies.
//!
//! GNU tar writes exactly these with `--format=pax --xattrs --acls`, so
//! `tar --xattrs --xattrs-include='*' --acls -xpf` brings them back too.
//!
//! The `tar` crate's pax reader splits records at every newline, so a
//! binary value holding a `\n` byte (an ACL naming uid 10, a capability
//! set) breaks it, and the fragments after the break could pass for
//! records. So when a value holds a newline, every attribute is written
//! first as `LIBARCHIVE.xattr.NAME=<base64>` (libarchive's keyword; GNU tar
//! warns that it ignores it and reads the `SCHILY.xattr` copy), and the
//! reader ([`MemberRecords::read`]) stops at the first malformed record.

use std::path::Path;

/// Extended attribute key prefix in pax records.
pub const XATTR_PREFIX: &str = "SCHILY.xattr.";
const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";

/// Why a file's extended attributes could not be archived (the file is
/// archived without them, with a warning).
#[derive(Debug, thiserror::Error)]
pub enum XattrError {
    #[error("cannot list extended attributes: {0}")]
    List(std::io::Error),
    #[error("extended attribute {0:?} is not UTF-8 and cannot be archived")]
    NotUtf8(std::ffi::OsString),
    #[error("cannot read extended attribute {name}: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
}

/// Records of one member's pax header, in order.
#[derive(Debug, Default, Clone)]
pub struct PaxRecords {
    records: Vec<(String, Vec<u8>)>,
}

impl PaxRecords {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn push(&mut self, key: &str, value: &[u8]) {
        self.records.push((key.to_string(), value.to_vec()));
    }

    /// `mtime` when it has a fractional part (whole seconds fit the header).
    pub fn mtime(&mut self, sec: i64, nsec: i64) {
        if nsec != 0 || sec < 0 {
            let v = format_time(sec, nsec);
            self.push("mtime", v.as_bytes());
        }
    }

    /// Every extended attribute of `path` (not following a symlink), and
    /// its ACLs as text. Attributes that cannot be read are reported in
    /// `Err` with the name of the one that failed; the caller warns.
    pub fn xattrs(&mut self, path: &Path) -> Result<(), XattrError> {
        let names = match xattr::list(path) {
            Ok(n) => n,
            // The filesystem has no xattrs at all.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
            Err(e) => return Err(XattrError::List(e)),
        };
        let mut names: Vec<_> = names.collect();
        names.sort();
        let mut attrs = Vec::new();
        for name in names {
            let Some(n) = name.to_str() else {
                return Err(XattrError::NotUtf8(name));
            };
            let value = match xattr::get(path, &name) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    return Err(XattrError::Read {
                        name: n.to_string(),
                        source: e,
                    });
                }
            };
            if (n == ACL_ACCESS || n == ACL_DEFAULT)
                && let Some(text) = acl_to_text(&value)
            {
                let key = if n == ACL_ACCESS {
                    "SCHILY.acl.access"
                } else {
                    "SCHILY.acl.default"
                };
                self.push(key, text.as_bytes());
            }
            attrs.push((n.to_string(), value));
        }
        if attrs.iter().any(|(_, v)| v.contains(&b'\n')) {
            use base64::Engine;
            for (n, v) in &attrs {
                let b64 = base64::engine::general_purpose::STANDARD.encode(v);
                self.push(&format!("{B64_PREFIX}{}", escape_name(n)), b64.as_bytes());
            }
        }
        for (n, v) in &attrs {
            self.push(&format!("{XATTR_PREFIX}{n}"), v);
        }
        Ok(())
    }

    /// The body of the `x` member: `"<len> <key>=<value>\n"` records, where
    /// `<len>` counts the whole record including itself.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.records {
            let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            out.extend_from_slice(len.to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out
    }

    /// Appends the `x` member for the entry called `name` (its header name
    /// is `PaxHeaders/<last component>`, as GNU tar writes it).
    pub fn append_to<W: std::io::Write>(
        &self,
        builder: &mut tar::Builder<W>,
        name: &[u8],
    ) -> std::io::Result<()> {
        let body = self.encode();
        let mut h = tar::Header::new_ustar();
        let base = name.rsplit(|b| *b == b'/').next().unwrap_or(b"");
        let mut hname = b"PaxHeaders/".to_vec();
        hname.extend_from_slice(&base[..base.len().min(88)]);
        h.as_old_mut().name[..hname.len()].copy_from_slice(&hname);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_cksum();
        builder.append(&h, body.as_slice())
    }
}

/// libarchive's keyword for an attribute with a base64 value.
const B64_PREFIX: &str = "LIBARCHIVE.xattr.";

/// Attribute names in libarchive keywords are %-escaped (`%`, `=` and
/// anything outside printable ASCII).
fn escape_name(n: &str) -> String {
    let mut out = String::new();
    for b in n.bytes() {
        if b == b'%' || b == b'=' || !(0x21..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

fn unescape_name(n: &str) -> Option<String> {
    let b = n.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(n.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a member's pax records say that the restore applies.
#[derive(Debug, Default, PartialEq)]
pub struct MemberRecords {
    /// Seconds and nanoseconds.
    pub mtime: Option<(i64, i64)>,
    /// Extended attributes, name → value.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl MemberRecords {
    /// Reads records up to the first malformed one (see the module doc):
    /// `LIBARCHIVE.xattr.*` when present, else `SCHILY.xattr.*`.
    pub fn read(exts: tar::PaxExtensions<'_>) -> MemberRecords {
        use base64::Engine;
        let mut out = MemberRecords::default();
        let (mut schily, mut b64) = (Vec::new(), Vec::new());
        for x in exts {
            let Ok(x) = x else { break };
            let Ok(key) = x.key() else { continue };
            if key == "mtime" {
                out.mtime = x.value().ok().and_then(parse_time);
            } else if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                schily.push((name.to_string(), x.value_bytes().to_vec()));
            } else if let Some(name) = key.strip_prefix(B64_PREFIX).and_then(unescape_name)
                && let Ok(v) = base64::engine::general_purpose::STANDARD.decode(x.value_bytes())
            {
                b64.push((name, v));
            }
        }
        out.xattrs = if b64.is_empty() { schily } else { b64 };
        out
    }
}

/// `sec.nnnnnnnnn`, pax style (a negative time counts down from 0).
fn format_time(sec: i64, nsec: i64) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

/// Parses a pax time (`1577836800`, `1577836800.5`, `-1.25`) into seconds
/// and nanoseconds (nsec in 0..1e9).
pub fn parse_time(v: &str) -> Option<(i64, i64)> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let sec: i64 = s.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nsec: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(if !neg {
        (sec, nsec)
    } else if nsec == 0 {
        (-sec, 0)
    } else {
        (-sec - 1, 1_000_000_000 - nsec)
    })
}

/// The kernel's POSIX ACL xattr (version 2: 4-byte header, then 8-byte
/// entries `tag u16, perm u16, id u32`, little-endian) as `acl_to_text`
/// short form with numeric ids. `None` for a malformed value.
pub fn acl_to_text(v: &[u8]) -> Option<String> {
    if v.len() < 4
        || u32::from_le_bytes(v[..4].try_into().ok()?) != 2
        || !(v.len() - 4).is_multiple_of(8)
    {
        return None;
    }
    let mut parts = Vec::new();
    for e in v[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let p = format!(
            "{}{}{}",
            if perm & 4 != 0 { 'r' } else { '-' },
            if perm & 2 != 0 { 'w' } else { '-' },
            if perm & 1 != 0 { 'x' } else { '-' }
        );
        parts.push(match tag {
            0x01 => format!("user::{p}"),
            0x02 => format!("user:{id}:{p}"),
            0x04 => format!("group::{p}"),
            0x08 => format!("group:{id}:{p}"),
            0x10 => format!("mask::{p}"),
            0x20 => format!("other::{p}"),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lengths_count_themselves() {
        let mut r = PaxRecords::default();
        r.push("mtime", b"1577836800.123456789");
        r.push("SCHILY.xattr.user.k", &[b'v'; 85]);
        let enc = r.encode();
        let text = String::from_utf8(enc).unwrap();
        for line in text.split_inclusive('\n') {
            let (n, _) = line.split_once(' ').unwrap();
            assert_eq!(n.parse::<usize>().unwrap(), line.len(), "{line:?}");
        }
        assert!(text.starts_with("30 mtime=1577836800.123456789\n"));
    }

    #[test]
    fn times_round_trip_with_nanoseconds() {
        for (s, n) in [(1577836800, 123456789), (0, 1), (-1, 500_000_000), (-5, 0)] {
            assert_eq!(parse_time(&format_time(s, n)), Some((s, n)), "{s} {n}");
        }
        assert_eq!(parse_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_time("x"), None);
    }

    #[test]
    fn acl_text_is_what_tar_acls_reads() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_to_text(&v).unwrap(),
            "user::rw-,user:1000:r--,group::r--,mask::r--,other::---"
        );
        assert_eq!(acl_to_text(&v[..7]), None);
    }

    #[test]
    fn the_tar_reader_sees_our_records() {
        let mut r = PaxRecords::default();
        r.mtime(1577836800, 5);
        r.push("SCHILY.xattr.user.bin", &[0, 255, b'=']);
        let mut b = tar::Builder::new(Vec::new());
        r.append_to(&mut b, b"files/a/x").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        b.append_data(&mut h, "files/a/x", std::io::empty())
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        let got: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_string(), x.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(got[0], ("mtime".into(), b"1577836800.000000005".to_vec()));
        assert_eq!(got[1].1, vec![0, 255, b'=']);
    }

    /// Values holding newlines (an ACL naming uid 10) come back whole, and
    /// text after a newline inside a value is never taken for a record.
    #[test]
    fn newlines_in_values_survive_the_tar_reader() {
        let dir = tempfile::tempdir_in(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let injected = b"a\n35 SCHILY.xattr.user.evil=injected\nb".to_vec();
        if xattr::set(&f, "user.bin", &injected).is_err() {
            return; // no user xattrs on this filesystem
        }
        xattr::set(&f, "user.plain", b"text").unwrap();
        let mut r = PaxRecords::default();
        r.mtime(7, 8);
        r.xattrs(&f).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        r.append_to(&mut b, b"files/f").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        b.append_data(&mut h, "files/f", std::io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        let got = MemberRecords::read(e.pax_extensions().unwrap().unwrap());
        assert_eq!(got.mtime, Some((7, 8)));
        let mut want = vec![
            ("user.bin".to_string(), injected),
            ("user.plain".to_string(), b"text".to_vec()),
        ];
        want.sort();
        let mut have = got.xattrs;
        have.sort();
        assert_eq!(have, want);
    }

    #[test]
    fn attribute_names_escape_and_back() {
        for n in ["user.a", "user.a=b%c d", "user.é"] {
            assert_eq!(unescape_name(&escape_name(n)).as_deref(), Some(n));
        }
    }
}
