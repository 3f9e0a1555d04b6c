//! Uploads: one PutObject up to the part size, a multipart upload above it
//! with several parts in flight.
//!
//! Never report a failed upload as shipped (pgBackRest issue 1290: a 503
//! SlowDown once left files missing while the tool said success):
//! - every part and every single PUT carries `Content-MD5`, which S3 checks
//!   against the bytes it got (400 BadDigest otherwise);
//! - the stream must be exactly as long as the runner announced;
//! - a 200 answer to CompleteMultipartUpload is read to its end, because S3
//!   may still report an error in its body;
//! - the ETag S3 answers for the stored object is checked: for a single PUT
//!   the MD5 of the bytes, for a multipart upload the MD5 of the parts' MD5s
//!   and `-<parts>`: a checksum of the whole object as S3 assembled it,
//!   computed from the part checksums at no cost (no HEAD is needed, so
//!   write-only keys without s3:GetObject work);
//! - the runner's sha256 is stored as object metadata, and fetch checks the
//!   bytes against it;
//! - on any failure the multipart upload is aborted, and ListParts must then
//!   say it is gone, so no part is left behind to be billed.

use std::io::Read;
use std::time::Instant;

use md5::{Digest as _, Md5};
use offsite_sdk::{Error, LogLevel, Reader, UploadRequest};
use rusty_s3::actions::{CompleteMultipartUploadResponse, CreateMultipartUpload};

use crate::client::{Client, error_in_body, gave_up, text_of};
use crate::fault::{Fault, classify};
use crate::http::{self, Exchange};
use crate::retry::Backoff;
use crate::settings::show_size;

/// Read from the runner's stream in steps of this size, so parts already in
/// flight are fed between steps while the next part is read.
const READ_STEP: usize = 1 << 20;

/// The runner's stream, held to the size the runner announced.
struct Source<'a, 'r> {
    reader: &'a mut Reader<'r>,
    read: u64,
    size: u64,
    name: &'a str,
}

impl Source<'_, '_> {
    /// Read into `buf` until it is full; the stream must not end before.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let mut at = 0;
        while at < buf.len() {
            let n = self.reader.read(&mut buf[at..]).map_err(|e| {
                Error::Transient(format!("{}: reading the generation: {e}", self.name))
            })?;
            if n == 0 {
                return Err(self.mismatch(self.read + at as u64, "only"));
            }
            at += n;
        }
        self.read += buf.len() as u64;
        Ok(())
    }

    /// After the announced size, the stream must end.
    fn finish(&mut self) -> Result<(), Error> {
        let mut extra = [0u8; 1];
        let more = self
            .reader
            .read(&mut extra)
            .map_err(|e| Error::Transient(format!("{}: reading the generation: {e}", self.name)))?;
        if more > 0 {
            return Err(self.mismatch(self.read + 1, "more than"));
        }
        Ok(())
    }

    fn mismatch(&self, got: u64, how: &str) -> Error {
        Error::Transient(format!(
            "{}: the stream gave {how} {got} bytes, the runner announced {}: not uploaded",
            self.name, self.size
        ))
    }
}

pub fn upload(client: &Client, req: &UploadRequest, data: &mut Reader) -> Result<(), Error> {
    let cfg = &client.s3.cfg;
    let key = cfg.key(&req.name)?;
    let part = cfg.part_size_for(req.size)?;
    let started = Instant::now();
    crate::orphans::sweep(client, &req.job, &req.name);
    let mut src = Source {
        reader: data,
        read: 0,
        size: req.size,
        name: &req.name,
    };
    if req.size <= part {
        single(client, &key, req, &mut src)?;
    } else {
        multipart(client, &key, req, &mut src, part)?;
    }
    offsite_sdk::info(&format!(
        "s3: {} stored as s3://{}/{key} ({}, {:.1} s)",
        req.name,
        cfg.bucket,
        show_size(req.size),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// PutObject. S3 answers with the ETag it computed: the MD5 of the bytes.
fn single(client: &Client, key: &str, req: &UploadRequest, src: &mut Source) -> Result<(), Error> {
    let mut buf = vec![0u8; req.size as usize];
    src.fill(&mut buf)?;
    src.finish()?;
    let md5 = Md5::digest(&buf);
    let op = client.s3.put_object(key, req.size, &md5, &req.sha256);
    let resp = client.call(&op, &buf)?;
    check_etag(
        client,
        key,
        resp.header("etag").as_deref(),
        resp.header("x-amz-server-side-encryption").as_deref(),
        &hex::encode(md5),
    )
}

/// The ETag S3 gives a multipart object: MD5 of the parts' MD5s, `-` and
/// the number of parts.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut all = Md5::new();
    for m in part_md5s {
        all.update(m);
    }
    format!("{}-{}", hex::encode(all.finalize()), part_md5s.len())
}

fn multipart(
    client: &Client,
    key: &str,
    req: &UploadRequest,
    src: &mut Source,
    part: u64,
) -> Result<(), Error> {
    let op = client.s3.create_multipart(key, &req.sha256);
    let mut resp = client.call(&op, &[])?;
    let text = resp
        .text(1 << 20)
        .map_err(|f| Error::Transient(f.message()))?;
    let upload_id = CreateMultipartUpload::parse_response(&text)
        .map_err(|e| Error::Other(format!("{}: unreadable answer: {e}", op.what)))?
        .upload_id()
        .to_string();
    let parallel = client.s3.cfg.parallel_for(part);
    offsite_sdk::info(&format!(
        "s3: multipart upload of {key}: {} in {} parts of {}, {parallel} in flight",
        show_size(req.size),
        req.size.div_ceil(part),
        show_size(part)
    ));
    let result =
        send_parts(client, key, &upload_id, req, src, part, parallel).and_then(|(etags, md5s)| {
            let expected = multipart_etag(&md5s);
            complete(client, key, &upload_id, req, &etags, &expected)
        });
    if result.is_err() {
        abort(client, key, &upload_id);
    }
    result
}

enum State {
    Free,
    /// Waiting until this monotonic time (ns) before the next attempt.
    Waiting(u64),
    Sending(Exchange),
}

/// One part buffer and the part it holds. At most `parallel` exist: they
/// are the plugin's memory use.
struct Slot {
    buf: Vec<u8>,
    part: u16,
    len: usize,
    /// Hashes the part as it is read, in steps between feeding the others.
    hasher: Md5,
    md5: [u8; 16],
    backoff: Backoff,
    state: State,
}

fn start_part(client: &Client, key: &str, upload_id: &str, s: &Slot) -> Result<Exchange, Fault> {
    let op = client
        .s3
        .upload_part(key, upload_id, s.part, s.len as u64, &s.md5);
    let req = client
        .s3
        .sign(&op, std::time::SystemTime::now())
        .map_err(Fault::Final)?;
    Exchange::start(&req, s.len, &op.what, client.endpoint())
}

/// Read part after part into free slots and keep up to `parallel` parts in
/// flight; returns the ETags S3 gave and the MD5s, in part order.
fn send_parts(
    client: &Client,
    key: &str,
    upload_id: &str,
    req: &UploadRequest,
    src: &mut Source,
    part: u64,
    parallel: usize,
) -> Result<(Vec<String>, Vec<[u8; 16]>), Error> {
    let total = req.size.div_ceil(part) as usize;
    let mut etags: Vec<Option<String>> = vec![None; total];
    let mut md5s: Vec<[u8; 16]> = vec![[0; 16]; total];
    let mut slots: Vec<Slot> = (0..parallel.min(total))
        .map(|_| Slot {
            buf: vec![],
            part: 0,
            len: 0,
            hasher: Md5::new(),
            md5: [0; 16],
            backoff: Backoff::new(),
            state: State::Free,
        })
        .collect();
    let mut next = 0usize; // index of the next part to read
    // The part being read: (slot, bytes read so far).
    let mut filling: Option<(usize, usize)> = None;
    let mut done = 0usize;
    while done < total {
        if filling.is_none()
            && next < total
            && let Some(i) = slots
                .iter()
                .position(|s| matches!(s.state, State::Free) && s.len == 0)
        {
            let s = &mut slots[i];
            s.part = (next + 1) as u16;
            s.len = (req.size - next as u64 * part).min(part) as usize;
            if s.buf.len() < s.len {
                s.buf = vec![0u8; part as usize];
            }
            s.backoff = Backoff::new();
            s.hasher = Md5::new();
            next += 1;
            filling = Some((i, 0));
        }
        if let Some((i, at)) = filling {
            let s = &mut slots[i];
            let end = s.len.min(at + READ_STEP);
            src.fill(&mut s.buf[at..end])?;
            s.hasher.update(&s.buf[at..end]);
            if end < s.len {
                filling = Some((i, end));
            } else {
                filling = None;
                if next == total {
                    src.finish()?;
                }
                s.md5 = std::mem::take(&mut s.hasher).finalize().into();
                md5s[s.part as usize - 1] = s.md5;
                s.state = match start_part(client, key, upload_id, s) {
                    Ok(ex) => State::Sending(ex),
                    Err(f) => retry_later(key, s, f)?,
                };
            }
        }
        let now = http::now_ns();
        for s in &mut slots {
            if let Some(etag) = drive(client, key, upload_id, s, now)? {
                etags[s.part as usize - 1] = Some(etag);
                s.state = State::Free;
                s.len = 0;
                done += 1;
            }
        }
        // Block only when there is nothing to read: a free slot and a part
        // still unread mean the next loop reads it.
        let can_read = next < total && slots.iter().any(|s| s.len == 0);
        if filling.is_none() && !can_read && done < total {
            let mut ps = vec![];
            let now = http::now_ns();
            for s in &slots {
                match &s.state {
                    State::Sending(ex) => ex.pollables(&mut ps),
                    State::Waiting(at) => ps.push(http::timer(std::time::Duration::from_nanos(
                        at.saturating_sub(now),
                    ))),
                    State::Free => {}
                }
            }
            http::wait_any(&ps);
        }
    }
    let etags = etags.into_iter().map(Option::unwrap_or_default).collect();
    Ok((etags, md5s))
}

/// Move one part on without blocking: start a due retry, feed its body,
/// read its answer. Returns the part's ETag once S3 has it.
fn drive(
    client: &Client,
    key: &str,
    upload_id: &str,
    s: &mut Slot,
    now: u64,
) -> Result<Option<String>, Error> {
    if let State::Waiting(at) = s.state {
        if at > now {
            return Ok(None);
        }
        s.state = match start_part(client, key, upload_id, s) {
            Ok(ex) => State::Sending(ex),
            Err(f) => retry_later(key, s, f)?,
        };
    }
    let State::Sending(ex) = &mut s.state else {
        return Ok(None);
    };
    match ex.step(&s.buf[..s.len]) {
        Ok(None) => Ok(None),
        Ok(Some(resp)) if (200..300).contains(&resp.status) => {
            resp.header("etag").map(Some).ok_or_else(|| {
                Error::Other(format!(
                    "UploadPart {} of {key}: the answer has no ETag",
                    s.part
                ))
            })
        }
        Ok(Some(mut resp)) => {
            let what = format!("UploadPart {} of {key}", s.part);
            let text = resp.error_text();
            let fault = classify(resp.status, &text, &client.context(&what));
            s.state = retry_later(key, s, fault)?;
            Ok(None)
        }
        Err(f) => {
            s.state = retry_later(key, s, f)?;
            Ok(None)
        }
    }
}

/// A failed attempt of a part: schedule the next one, or give up.
fn retry_later(key: &str, s: &mut Slot, f: Fault) -> Result<State, Error> {
    let what = format!("UploadPart {} of {key}", s.part);
    match f {
        Fault::Final(e) => Err(e),
        Fault::Retry(why) => match s.backoff.next(http::random()) {
            Some(d) => {
                offsite_sdk::log(
                    LogLevel::Warn,
                    &format!(
                        "s3: {why}; attempt {} of {} in {:.1} s",
                        s.backoff.failures() + 1,
                        crate::retry::ATTEMPTS,
                        d.as_secs_f64()
                    ),
                );
                Ok(State::Waiting(http::now_ns() + d.as_nanos() as u64))
            }
            None => Err(gave_up(&what, &why)),
        },
    }
}

fn complete(
    client: &Client,
    key: &str,
    upload_id: &str,
    req: &UploadRequest,
    etags: &[String],
    expected: &str,
) -> Result<(), Error> {
    let (op, body) = client.s3.complete(key, upload_id, etags);
    let mut backoff = Backoff::new();
    loop {
        match client.call(&op, body.as_bytes()) {
            Ok(mut resp) => {
                let text = match resp.text(1 << 20) {
                    Ok(t) => t,
                    Err(f) => {
                        client.pause(&mut backoff, &op.what, &f.message())?;
                        continue;
                    }
                };
                match error_in_body(client, &op.what, &text) {
                    None => {
                        let etag = CompleteMultipartUploadResponse::parse(&text)
                            .ok()
                            .map(|r| r.etag().to_string());
                        let sse = resp.header("x-amz-server-side-encryption");
                        return check_etag(client, key, etag.as_deref(), sse.as_deref(), expected);
                    }
                    Some(Fault::Final(e)) => return Err(e),
                    Some(Fault::Retry(why)) => client.pause(&mut backoff, &op.what, &why)?,
                }
            }
            // An earlier attempt may have completed it and only its answer
            // was lost: then the object is there, whole.
            Err(e) if text_of(&e).contains("NoSuchUpload") => {
                return match completed_earlier(client, key, req, expected) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(e),
                };
            }
            Err(e) => return Err(e),
        }
    }
}

/// The ETag S3 answered for the stored object must be the one the bytes
/// sent give. With SSE-KMS the ETag is no MD5 of the content (with SSE-S3,
/// AES256, it still is); elsewhere it is compared only where it has the MD5
/// form, since some S3-compatible servers use their own.
fn check_etag(
    client: &Client,
    key: &str,
    got: Option<&str>,
    encryption: Option<&str>,
    expected: &str,
) -> Result<(), Error> {
    let got = got.unwrap_or_default().trim_matches('"');
    let kms = encryption.is_some_and(|e| e.starts_with("aws:kms"));
    let md5_form = match got.split_once('-') {
        Some((hash, parts)) => hash.len() == 32 && parts.parse::<u32>().is_ok(),
        None => got.len() == 32,
    };
    if md5_form && !kms && !got.eq_ignore_ascii_case(expected) {
        return Err(Error::Transient(format!(
            "s3://{}/{key} was stored with the ETag {got}, but the bytes sent give {expected}: the stored object is not what was sent",
            client.s3.cfg.bucket
        )));
    }
    Ok(())
}

/// When the answer to CompleteMultipartUpload was lost and a retry finds the
/// upload gone: the object must be there with the size and the sha256 of
/// this generation (and the ETag its parts give).
fn completed_earlier(
    client: &Client,
    key: &str,
    req: &UploadRequest,
    expected: &str,
) -> Result<(), Error> {
    let head = client.head(key)?;
    check_etag(
        client,
        key,
        head.etag.as_deref(),
        head.encryption.as_deref(),
        expected,
    )?;
    let same = head.size == Some(req.size)
        && head
            .sha256
            .is_some_and(|sha| sha.eq_ignore_ascii_case(&req.sha256));
    if !same {
        return Err(Error::Transient(format!(
            "s3://{}/{key} is not this generation (size {:?}, {} bytes expected)",
            client.s3.cfg.bucket, head.size, req.size
        )));
    }
    Ok(())
}

/// Abort, then make sure the upload and its parts are gone: a part still
/// arriving while the abort runs can outlive it, so abort again if needed.
pub fn abort(client: &Client, key: &str, upload_id: &str) {
    let gone = |e: &Error| text_of(e).contains("NoSuchUpload");
    for _ in 0..3 {
        match client.call(&client.s3.abort(key, upload_id), &[]) {
            Ok(_) => {}
            Err(e) if gone(&e) => return,
            Err(e) => {
                offsite_sdk::log(
                    LogLevel::Error,
                    &format!(
                        "s3: could not abort the multipart upload {upload_id} of {key}: {}; its parts stay billed until it is aborted (e.g. `aws s3api abort-multipart-upload`) or a lifecycle rule removes it",
                        text_of(&e)
                    ),
                );
                return;
            }
        }
        match client.call(&client.s3.list_parts(key, upload_id), &[]) {
            Err(e) if gone(&e) => return,
            Err(_) => return,
            Ok(mut resp) => {
                let text = resp.text(1 << 20).unwrap_or_default();
                if !text.contains("<Part>") {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        // Two parts "a" and "b": md5("a") = 0cc175b9..., md5("b") = 92eb5ffe...
        let a: [u8; 16] = Md5::digest(b"a").into();
        let b: [u8; 16] = Md5::digest(b"b").into();
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        assert_eq!(
            multipart_etag(&[a, b]),
            format!("{}-2", hex::encode(Md5::digest(&both)))
        );
        assert!(multipart_etag(&[a]).ends_with("-1"));
    }
}
