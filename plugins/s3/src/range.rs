//! A ranged read: GetObject with an HTTP `Range` header (RFC 9110 §14.2),
//! so a small member of a large volume costs its own size on the wire.

use std::io::Write;

use offsite_sdk::Error;

use crate::client::Client;
use crate::fault::Fault;
use crate::http::Chunk;
use crate::retry::Backoff;

/// The memory a ranged fetch holds at once.
const RANGE_CHUNK: u64 = 1 << 20;

/// `Content-Range: bytes FIRST-LAST/TOTAL` (RFC 9110 §14.4), `TOTAL` may be
/// `*`. Returns (first, last).
pub fn content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, _total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    (first <= last).then_some((first, last))
}

/// The `Range` header value for `length` bytes from `from` (`length` ≥ 1).
pub fn range_header(from: u64, length: u64) -> String {
    format!("bytes={from}-{}", from + length - 1)
}

impl Client {
    /// Write bytes `offset .. offset + length` of `key` to `sink` and return
    /// how many arrived: `length`, or fewer when the object ends first.
    /// Never writes more than `length`. A body that breaks mid-way is
    /// resumed from where it stopped, pinned to the first answer's ETag so
    /// two versions are never spliced. A server that ignores `Range` (200
    /// with the whole object) is `unsupported`: the runner then fetches the
    /// whole object rather than this call reading it all unasked.
    pub fn fetch_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
        sink: &mut impl Write,
    ) -> Result<u64, Error> {
        let mut written = 0u64;
        let mut etag: Option<String> = None;
        let mut backoff = Backoff::new();
        while written < length {
            let from = offset + written;
            let mut op = self.s3.get(key, 0, etag.as_deref());
            op.headers
                .push(("range".into(), range_header(from, length - written)));
            let mut resp = self.call(&op, &[])?;
            if resp.status != 206 {
                return Err(Error::Unsupported(format!(
                    "{}: asked for bytes {from}.. with a Range header, the server answered HTTP {} (it ignores Range); fetch the whole object",
                    op.what, resp.status
                )));
            }
            let range = resp.header("content-range");
            // Where this answer's body ends: the range asked, or the end of
            // the object when it is shorter.
            let upto = match range.as_deref().and_then(content_range) {
                Some((first, last)) if first == from => (last + 1 - offset).min(length),
                _ => {
                    return Err(Error::Other(format!(
                        "{}: asked for bytes from {from}, the server answered Content-Range {:?}",
                        op.what,
                        range.unwrap_or_default()
                    )));
                }
            };
            if etag.is_none() {
                etag = resp.header("etag");
            }
            let broken = loop {
                let want = (upto - written).min(RANGE_CHUNK);
                if want == 0 {
                    break None;
                }
                match resp.read(want as usize) {
                    Chunk::Data(d) => {
                        // `read` returns at most `want` bytes.
                        sink.write_all(&d).map_err(|e| {
                            Error::Other(format!("{key}: writing the fetched bytes: {e}"))
                        })?;
                        written += d.len() as u64;
                    }
                    Chunk::End => {
                        break Some(Fault::Retry(format!(
                            "{}: the body ended after byte {} of the {} announced",
                            op.what,
                            offset + written,
                            offset + upto
                        )));
                    }
                    Chunk::Broken(f) => break Some(f),
                }
            };
            match broken {
                // The object ends before the range does: report what came.
                None if written < length => break,
                None => {}
                Some(Fault::Final(e)) => return Err(e),
                Some(Fault::Retry(m)) => self.pause(&mut backoff, &op.what, &m)?,
            }
        }
        sink.flush()
            .map_err(|e| Error::Other(format!("{key}: writing the fetched bytes: {e}")))?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 0-99/1000"), Some((0, 99)));
        assert_eq!(content_range("bytes 5-5/*"), Some((5, 5)));
        assert_eq!(content_range(" bytes  7-9/10 "), Some((7, 9)));
        assert_eq!(content_range("bytes */1000"), None);
        assert_eq!(content_range("bytes 9-7/10"), None);
        assert_eq!(content_range("items 0-1/2"), None);
    }

    #[test]
    fn range_headers_are_inclusive() {
        assert_eq!(range_header(0, 1), "bytes=0-0");
        assert_eq!(range_header(100, 102_400), "bytes=100-102499");
    }
}
