//! Versioned buckets. With versioning on, DeleteObject only puts a delete
//! marker over the key: the bytes stay, and stay billed. The plugin asks
//! once per instance (GetBucketVersioning) and then either deletes every
//! version of a key it removes (`remove_versions = true`: ListObjectVersions
//! for that exact key, DeleteObject with each versionId, delete markers
//! included), or warns once that rotation there frees no space.

use offsite_sdk::Error;
use url::Url;

use crate::client::Client;
use crate::request::{Method, Op};

/// What GetBucketVersioning said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: DeleteObject frees the space.
    Off,
    Enabled,
    /// Was enabled: old versions remain, new deletes still add markers.
    Suspended,
}

/// The `<Status>` of a GetBucketVersioning answer (absent: never enabled).
pub fn parse_versioning(xml: &str) -> Versioning {
    match tag(xml, "Status").as_deref() {
        Some("Enabled") => Versioning::Enabled,
        Some("Suspended") => Versioning::Suspended,
        _ => Versioning::Off,
    }
}

/// One page of ListObjectVersions: (key, versionId) of every version and
/// delete marker, and the markers of the next page when truncated.
pub struct VersionPage {
    pub versions: Vec<(String, String)>,
    pub next: Option<(String, String)>,
}

pub fn parse_versions(xml: &str) -> VersionPage {
    let mut versions = vec![];
    for kind in ["Version", "DeleteMarker"] {
        let open = format!("<{kind}>");
        let close = format!("</{kind}>");
        let mut rest = xml;
        while let Some(i) = rest.find(&open) {
            let after = &rest[i + open.len()..];
            let Some(j) = after.find(&close) else { break };
            let block = &after[..j];
            if let (Some(k), Some(v)) = (tag(block, "Key"), tag(block, "VersionId")) {
                versions.push((k, v));
            }
            rest = &after[j + close.len()..];
        }
    }
    let next = (tag(xml, "IsTruncated").as_deref() == Some("true"))
        .then(|| {
            Some((
                tag(xml, "NextKeyMarker")?,
                tag(xml, "NextVersionIdMarker").unwrap_or_default(),
            ))
        })
        .flatten();
    VersionPage { versions, next }
}

/// The text of the first `<name>` element, XML entities decoded.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let i = xml.find(&open)? + open.len();
    let j = xml[i..].find(&format!("</{name}>"))?;
    Some(
        xml[i..i + j]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

fn op(method: Method, url: Url, what: String) -> Op {
    Op {
        method,
        url,
        headers: vec![("content-length".into(), "0".into())],
        what,
    }
}

impl Client {
    /// GetBucketVersioning.
    pub fn versioning(&self) -> Result<Versioning, Error> {
        let mut url = self.s3.bucket_url();
        url.set_query(Some("versioning"));
        let what = format!("GetBucketVersioning {}", self.s3.cfg.bucket);
        let mut resp = self.call(&op(Method::Get, url, what), &[])?;
        let text = resp
            .text(1 << 20)
            .map_err(|f| Error::Transient(f.message()))?;
        Ok(parse_versioning(&text))
    }

    /// Deletes every version and delete marker of exactly `key`; how many.
    pub fn remove_versions(&self, key: &str) -> Result<usize, Error> {
        let mut found = vec![];
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut url = self.s3.bucket_url();
            url.set_query(Some("versions"));
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("prefix", key);
                if let Some((k, v)) = &marker {
                    q.append_pair("key-marker", k);
                    if !v.is_empty() {
                        q.append_pair("version-id-marker", v);
                    }
                }
            }
            let what = format!("ListObjectVersions {key}");
            let mut resp = self.call(&op(Method::Get, url, what), &[])?;
            let text = resp
                .text(16 << 20)
                .map_err(|f| Error::Transient(f.message()))?;
            let page = parse_versions(&text);
            // The prefix also matches `KEY.manifest.json`: this key only.
            found.extend(page.versions.into_iter().filter(|(k, _)| k == key));
            match page.next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        for (_, id) in &found {
            let mut url = self.s3.object_url(key)?;
            url.query_pairs_mut().append_pair("versionId", id);
            let what = format!("DeleteObject {key} version {id}");
            self.call(&op(Method::Delete, url, what), &[])?;
        }
        Ok(found.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioning_status_is_read_from_the_answer() {
        let on = r#"<?xml version="1.0"?><VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
        assert_eq!(parse_versioning(on), Versioning::Enabled);
        let never = r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>"#;
        assert_eq!(parse_versioning(never), Versioning::Off);
        assert_eq!(
            parse_versioning(
                "<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>"
            ),
            Versioning::Suspended
        );
    }

    #[test]
    fn versions_and_delete_markers_are_listed_with_the_next_page() {
        let xml = "<ListVersionsResult><IsTruncated>true</IsTruncated>\
            <NextKeyMarker>a&amp;b</NextKeyMarker><NextVersionIdMarker>v3</NextVersionIdMarker>\
            <Version><Key>a&amp;b</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest></Version>\
            <DeleteMarker><Key>a&amp;b</Key><VersionId>v2</VersionId></DeleteMarker>\
            <Version><Key>a&amp;b.manifest.json</Key><VersionId>v9</VersionId></Version>\
            </ListVersionsResult>";
        let p = parse_versions(xml);
        assert_eq!(
            p.versions,
            vec![
                ("a&b".to_string(), "v1".to_string()),
                ("a&b.manifest.json".to_string(), "v9".to_string()),
                ("a&b".to_string(), "v2".to_string()),
            ]
        );
        assert_eq!(p.next, Some(("a&b".to_string(), "v3".to_string())));
    }
}
