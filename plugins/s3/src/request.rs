//! S3 requests as plain data: rusty-s3 shapes each action's URL (bucket
//! addressing, key escaping, query) and aws-sigv4 signs it in headers
//! (AWS Signature Version 4, the `Authorization` header form, which every
//! S3-compatible server verifies, moto included).
//!
//! Payloads are sent as `UNSIGNED-PAYLOAD`: their integrity is carried by
//! `Content-MD5`, which the server checks against the bytes it received.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use jiff::Timestamp;
use offsite_sdk::Error;
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject, GetObject,
    HeadObject, ListObjectsV2, ListParts, PutObject, UploadPart,
};
use rusty_s3::{Bucket, S3Action, UrlStyle};
use url::Url;

use crate::settings::Config;

/// The object metadata that carries the runner's sha256 of the generation,
/// checked after upload and on fetch.
pub const SHA256_META: &str = "x-amz-meta-offsite-sha256";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// One request before signing; signed again for every attempt, so the
/// signature's date stays fresh across retries.
#[derive(Clone, Debug)]
pub struct Op {
    pub method: Method,
    pub url: Url,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// For messages and logs: e.g. `UploadPart 3 of calls/x.zst`.
    pub what: String,
}

/// A signed request, ready for the wire.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
}

pub struct S3 {
    pub cfg: Config,
    bucket: Bucket,
    creds: aws_credential_types::Credentials,
}

/// rusty-s3 builds URLs; without credentials it only adds the query.
fn url_of<'a>(action: impl S3Action<'a>) -> Url {
    action.sign_with_time(Duration::ZERO, &Timestamp::UNIX_EPOCH)
}

pub fn md5_base64(md5: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

impl S3 {
    pub fn new(cfg: Config) -> Result<S3, Error> {
        let style = if cfg.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            cfg.endpoint.clone(),
            style,
            cfg.bucket.clone(),
            cfg.region.clone(),
        )
        .map_err(|e| {
            Error::Config(format!(
                "`endpoint` = {} with `bucket` = {} gives no valid URL ({e:?}){}",
                cfg.endpoint,
                cfg.bucket,
                if cfg.path_style {
                    ""
                } else {
                    "; virtual-hosted style (`path_style` = false) needs a host name, not an IP address"
                }
            ))
        })?;
        let creds = aws_credential_types::Credentials::new(
            cfg.access_key_id.clone(),
            cfg.secret_access_key.clone(),
            cfg.session_token.clone(),
            None,
            "offsite-settings",
        );
        Ok(S3 { cfg, bucket, creds })
    }

    /// Every request states its body's length, 0 included: without it the
    /// body would go out chunked, which S3 refuses (411 MissingContentLength).
    fn op(&self, method: Method, url: Url, what: String) -> Op {
        Op {
            method,
            url,
            headers: vec![("content-length".into(), "0".into())],
            what,
        }
    }

    /// Headers every new object gets: its sha256 and storage class.
    fn object_headers(&self, op: &mut Op, sha256_hex: &str) {
        op.headers
            .push((SHA256_META.into(), sha256_hex.to_string()));
        if let Some(class) = &self.cfg.storage_class {
            op.headers
                .push(("x-amz-storage-class".into(), class.clone()));
        }
    }

    pub fn put_object(&self, key: &str, len: u64, md5: &[u8], sha256_hex: &str) -> Op {
        let url = url_of(PutObject::new(&self.bucket, None, key));
        let mut op = self.op(Method::Put, url, format!("PutObject {key}"));
        op.headers[0].1 = len.to_string();
        op.headers.push(("content-md5".into(), md5_base64(md5)));
        self.object_headers(&mut op, sha256_hex);
        op
    }

    pub fn create_multipart(&self, key: &str, sha256_hex: &str) -> Op {
        let url = url_of(CreateMultipartUpload::new(&self.bucket, None, key));
        let mut op = self.op(Method::Post, url, format!("CreateMultipartUpload {key}"));
        self.object_headers(&mut op, sha256_hex);
        op
    }

    pub fn upload_part(&self, key: &str, upload_id: &str, part: u16, len: u64, md5: &[u8]) -> Op {
        let url = url_of(UploadPart::new(&self.bucket, None, key, part, upload_id));
        let mut op = self.op(Method::Put, url, format!("UploadPart {part} of {key}"));
        op.headers[0].1 = len.to_string();
        op.headers.push(("content-md5".into(), md5_base64(md5)));
        op
    }

    /// The request and its XML body, parts in order.
    pub fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> (Op, String) {
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            None,
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = url_of(action.clone());
        let body = action.body();
        let mut op = self.op(Method::Post, url, format!("CompleteMultipartUpload {key}"));
        op.headers[0].1 = body.len().to_string();
        (op, body)
    }

    pub fn abort(&self, key: &str, upload_id: &str) -> Op {
        let url = url_of(AbortMultipartUpload::new(
            &self.bucket,
            None,
            key,
            upload_id,
        ));
        self.op(Method::Delete, url, format!("AbortMultipartUpload {key}"))
    }

    pub fn list_parts(&self, key: &str, upload_id: &str) -> Op {
        let url = url_of(ListParts::new(&self.bucket, None, key, upload_id));
        self.op(Method::Get, url, format!("ListParts {key}"))
    }

    pub fn head(&self, key: &str) -> Op {
        let url = url_of(HeadObject::new(&self.bucket, None, key));
        self.op(Method::Head, url, format!("HeadObject {key}"))
    }

    /// From byte `from` on; a resumed fetch pins the version it started
    /// with by its ETag, so it never splices two versions together.
    pub fn get(&self, key: &str, from: u64, etag: Option<&str>) -> Op {
        let url = url_of(GetObject::new(&self.bucket, None, key));
        let mut op = self.op(Method::Get, url, format!("GetObject {key}"));
        if from > 0 {
            op.headers.push(("range".into(), format!("bytes={from}-")));
        }
        if let Some(tag) = etag {
            op.headers.push(("if-match".into(), tag.to_string()));
        }
        op
    }

    pub fn delete(&self, key: &str) -> Op {
        let url = url_of(DeleteObject::new(&self.bucket, None, key));
        self.op(Method::Delete, url, format!("DeleteObject {key}"))
    }

    /// Multipart uploads in progress under `prefix` (one page of up to
    /// 1000, sorted by key).
    pub fn list_uploads(&self, prefix: &str) -> Op {
        let mut url = url_of(ListObjectsV2::new(&self.bucket, None));
        url.set_query(None);
        url.query_pairs_mut()
            .append_key_only("uploads")
            .append_pair("prefix", prefix);
        self.op(Method::Get, url, format!("ListMultipartUploads {prefix}*"))
    }

    /// One page of keys under `prefix`, without descending into "folders".
    pub fn list(&self, prefix: &str, token: Option<&str>) -> Op {
        let mut action = ListObjectsV2::new(&self.bucket, None);
        action.with_prefix(prefix.to_string());
        action.with_delimiter("/");
        if let Some(t) = token {
            action.with_continuation_token(t.to_string());
        }
        let url = url_of(action);
        self.op(Method::Get, url, format!("ListObjectsV2 {prefix}*"))
    }

    /// Sign `op` for sending now (or at `time`, for tests).
    pub fn sign(&self, op: &Op, time: SystemTime) -> Result<Request, Error> {
        let identity = self.creds.clone().into();
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent (no double escaping, no `..` folding:
        // a key may contain either).
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        // S3 requires x-amz-content-sha256 on every signed request.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.cfg.region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| Error::Other(format!("cannot sign {}: {e}", op.what)))?
            .into();
        let signable = SignableRequest::new(
            op.method.as_str(),
            op.url.as_str(),
            op.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| Error::Other(format!("cannot sign {}: {e}", op.what)))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| Error::Other(format!("cannot sign {}: {e}", op.what)))?
            .into_parts();
        let mut headers = op.headers.clone();
        let (signing_headers, _query) = instructions.into_parts();
        for h in signing_headers {
            headers.push((h.name().to_string(), h.value().to_string()));
        }
        Ok(Request {
            method: op.method,
            url: op.url.clone(),
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use offsite_sdk::Settings;

    fn s3(pairs: &[(&str, &str)]) -> S3 {
        let mut all = vec![
            ("endpoint", "http://127.0.0.1:9000"),
            ("bucket", "backups"),
            ("access_key_id", "AKIDEXAMPLE"),
            (
                "secret_access_key",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
            ("prefix", "calls/"),
        ];
        all.extend_from_slice(pairs);
        let s = Settings::from_pairs(
            all.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        S3::new(Config::from_settings(&s).unwrap()).unwrap()
    }

    fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn urls_are_path_style_with_escaped_keys() {
        let s = s3(&[]);
        let op = s.put_object("calls/a b+c.zst", 3, &[0; 16], "ab");
        assert_eq!(
            op.url.as_str(),
            "http://127.0.0.1:9000/backups/calls/a%20b%2Bc.zst"
        );
        let op = s.upload_part("k", "id/1", 7, 5, &[0; 16]);
        assert_eq!(op.url.query(), Some("partNumber=7&uploadId=id%2F1"));
        let op = s.list("calls/", Some("tok+en"));
        let q = op.url.query().unwrap();
        assert!(q.contains("list-type=2"), "{q}");
        assert!(q.contains("continuation-token=tok%2Ben"), "{q}");
        assert!(q.contains("delimiter=%2F"), "{q}");
        let virt = s3(&[
            ("path_style", "false"),
            ("endpoint", "https://s3.example.net"),
        ]);
        assert_eq!(
            virt.head("k").url.as_str(),
            "https://backups.s3.example.net/k"
        );
    }

    #[test]
    fn requests_are_signed_in_headers_for_the_configured_region() {
        let s = s3(&[("region", "eu-west-1")]);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let r = s
            .sign(&s.put_object("calls/x", 3, &[1; 16], "ab"), t)
            .unwrap();
        let auth = header(&r, "authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20130524/eu-west-1/s3/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains("content-md5;"),
            "Content-MD5 is signed: {auth}"
        );
        assert!(auth.contains("x-amz-meta-offsite-sha256"), "{auth}");
        assert_eq!(header(&r, "x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
        assert_eq!(header(&r, "x-amz-date"), Some("20130524T000000Z"));
        assert_eq!(header(&r, "content-md5"), Some("AQEBAQEBAQEBAQEBAQEBAQ=="));
        // Same input, same signature; another secret, another one.
        let again = s
            .sign(&s.put_object("calls/x", 3, &[1; 16], "ab"), t)
            .unwrap();
        assert_eq!(header(&again, "authorization"), Some(auth));
        let other = s3(&[("region", "eu-west-1"), ("secret_access_key", "other")]);
        let r2 = other
            .sign(&other.put_object("calls/x", 3, &[1; 16], "ab"), t)
            .unwrap();
        assert_ne!(header(&r2, "authorization"), Some(auth));
    }

    #[test]
    fn a_session_token_is_sent() {
        let s = s3(&[("session_token", "TOKEN")]);
        let r = s.sign(&s.head("k"), SystemTime::now()).unwrap();
        assert_eq!(header(&r, "x-amz-security-token"), Some("TOKEN"));
    }

    #[test]
    fn complete_lists_parts_in_order() {
        let s = s3(&[]);
        let (op, body) = s.complete("k", "u", &["\"a\"".into(), "\"b\"".into()]);
        assert_eq!(op.method, Method::Post);
        assert_eq!(op.url.query(), Some("uploadId=u"));
        let a = body.find("<PartNumber>1</PartNumber>").unwrap();
        let b = body.find("<PartNumber>2</PartNumber>").unwrap();
        assert!(a < b, "{body}");
    }
}
