//! Checking an upload's bytes against what the runner announced.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::{Error, UploadRequest};

/// A `Read` adapter that counts and hashes what passes through it, so an
/// upload can check `req.size` and `req.sha256` before it makes the object
/// visible:
///
/// ```ignore
/// let mut data = Checked::new(data);
/// io::copy(&mut data, &mut part_file)?;
/// data.finish(req)?;            // before the rename
/// ```
///
/// Works over any `Read` (a [`crate::Reader`], or a byte slice in a native
/// test). Bytes spliced past it (host to host) are not seen: check those
/// with the server's own count or checksum instead.
pub struct Checked<R> {
    inner: R,
    read: u64,
    hash: Sha256,
}

impl<R: Read> Checked<R> {
    pub fn new(inner: R) -> Self {
        Checked {
            inner,
            read: 0,
            hash: Sha256::new(),
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Lowercase hex sha256 of what was read so far.
    pub fn sha256(&self) -> String {
        self.hash
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `Ok` when exactly `req.size` bytes with `req.sha256` were read;
    /// otherwise `transient` (the runner retries the upload), naming both.
    pub fn finish(&self, req: &UploadRequest) -> Result<(), Error> {
        self.check(req.size, &req.sha256)
    }

    /// [`Checked::finish`] with the expected values given directly.
    pub fn check(&self, size: u64, sha256: &str) -> Result<(), Error> {
        if self.read != size {
            return Err(Error::Transient(format!(
                "the upload stream gave {} bytes, {size} were announced",
                self.read
            )));
        }
        let got = self.sha256();
        if !got.eq_ignore_ascii_case(sha256) {
            return Err(Error::Transient(format!(
                "the upload stream's sha256 is {got}, {sha256} was announced"
            )));
        }
        Ok(())
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn counts_and_hashes() {
        let mut c = Checked::new(&b"abc"[..]);
        io::copy(&mut c, &mut io::sink()).unwrap();
        assert_eq!(c.bytes_read(), 3);
        assert_eq!(c.sha256(), ABC);
        assert!(c.check(3, ABC).is_ok());
        assert!(
            matches!(c.check(4, ABC), Err(Error::Transient(m)) if m.contains("gave 3 bytes, 4"))
        );
        let other = "0".repeat(64);
        assert!(matches!(c.check(3, &other), Err(Error::Transient(_))));
    }
}
