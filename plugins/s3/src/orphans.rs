//! Multipart uploads a run left behind: when the runner stops a hung upload,
//! or the process is killed, the plugin gets no chance to abort, and the
//! parts already stored stay billed. The next upload of the same job finds
//! them by name (ListMultipartUploads under `prefix` + `JOB-`) and aborts
//! those that are surely ours and surely dead:
//!
//! - only keys of this job's generations (`JOB-YYYYMMDDTHHMMSSZ.ext`, right
//!   under `prefix`), never another job's or anyone else's object;
//! - the generation about to be uploaded again (the runner holds the job's
//!   lock, so no other upload of it is running), or any other generation
//!   whose upload began more than [`ORPHAN_AGE`] ago (a second destination
//!   pointed at the same bucket and prefix may be uploading it right now).
//!
//! A failure here is logged and the upload goes on: the backup matters more.

use std::time::Duration;

use offsite_sdk::LogLevel;

use crate::client::{Client, text_of};
use crate::fault::tag;

/// An upload of another generation this old is no longer running.
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// One multipart upload as ListMultipartUploads gives it.
#[derive(Debug, PartialEq, Eq)]
pub struct InProgress {
    pub key: String,
    pub upload_id: String,
    /// Seconds since the epoch, when the server says.
    pub initiated: Option<i64>,
}

/// Abort this job's dead multipart uploads before uploading `name`.
pub fn sweep(client: &Client, job: &str, name: &str) {
    let prefix = &client.s3.cfg.prefix;
    let op = client.s3.list_uploads(&format!("{prefix}{job}-"));
    let text = match client.call(&op, &[]).and_then(|mut r| {
        r.text(16 << 20)
            .map_err(|f| offsite_sdk::Error::Transient(f.message()))
    }) {
        Ok(t) => t,
        Err(e) => {
            offsite_sdk::log(
                LogLevel::Warn,
                &format!(
                    "s3: cannot look for multipart uploads left by an interrupted run ({}); any there stay until a later run or a lifecycle rule removes them",
                    text_of(&e)
                ),
            );
            return;
        }
    };
    let now = jiff::Timestamp::now().as_second();
    for u in parse(&text) {
        let Some(other) = u.key.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if !is_generation_of(job, other) {
            continue;
        }
        let old = u
            .initiated
            .is_some_and(|t| now - t > ORPHAN_AGE.as_secs() as i64);
        if other == name || old {
            offsite_sdk::info(&format!(
                "s3: aborting the multipart upload {} of {} left by an interrupted run",
                u.upload_id, u.key
            ));
            crate::upload::abort(client, &u.key, &u.upload_id);
        }
    }
}

/// `JOB-YYYYMMDDTHHMMSSZ.ext`: the runner's generation names (and their
/// `.manifest.json`), nothing else; the SDK's one rule for every plugin.
pub use offsite_sdk::is_generation_of;

/// The `<Upload>` entries of a ListMultipartUploadsResult.
pub fn parse(xml: &str) -> Vec<InProgress> {
    let mut out = vec![];
    let mut rest = xml;
    while let Some(start) = rest.find("<Upload>") {
        let after = &rest[start + "<Upload>".len()..];
        let Some(end) = after.find("</Upload>") else {
            break;
        };
        let block = &after[..end];
        if let (Some(key), Some(upload_id)) = (tag(block, "Key"), tag(block, "UploadId")) {
            out.push(InProgress {
                key,
                upload_id,
                initiated: tag(block, "Initiated")
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_second()),
            });
        }
        rest = &after[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_jobs_generation_names() {
        assert!(is_generation_of("calls", "calls-20261129T230000Z.sql.zst"));
        assert!(is_generation_of(
            "calls",
            "calls-20261129T230000Z.sql.zst.manifest.json"
        ));
        assert!(!is_generation_of(
            "calls",
            "calls-old-20261129T230000Z.sql.zst"
        ));
        assert!(!is_generation_of("calls", "calls-20261129T230000Z"));
        assert!(!is_generation_of("calls", "calls-2026112xT230000Z.tar.zst"));
        assert!(!is_generation_of("calls", "other-20261129T230000Z.tar.zst"));
        assert!(!is_generation_of("calls", "calls-20261129T230000Z.x/y"));
    }

    #[test]
    fn parses_a_listing() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><Prefix>p/calls-</Prefix><IsTruncated>false</IsTruncated>
  <Upload><Key>p/calls-20261129T230000Z.sql.zst</Key><UploadId>abc</UploadId>
    <Initiated>2026-11-29T23:00:01.000Z</Initiated></Upload>
  <Upload><Key>p/a&amp;b</Key><UploadId>def</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let v = parse(xml);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].key, "p/calls-20261129T230000Z.sql.zst");
        assert_eq!(v[0].upload_id, "abc");
        assert!(v[0].initiated.is_some());
        assert_eq!(v[1].key, "p/a&b");
        assert_eq!(v[1].initiated, None);
    }
}
