//! The few parts of a WebDAV `PROPFIND` answer (RFC 4918 multistatus XML)
//! a destination needs: each member's name, size and modification time.
//! Namespace prefixes vary between servers (`D:`, `d:`, none), so elements
//! are matched by local name.

use offsite_sdk::ObjectInfo;
use offsite_sdk::http::decode_path;

/// The body of a `PROPFIND` asking for size, time and type only.
pub const PROPFIND: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/><D:getlastmodified/><D:resourcetype/></D:prop></D:propfind>"#;

/// Files directly inside the collection at `base_path` (ending in `/`).
pub fn parse(xml: &str, base_path: &str) -> Vec<ObjectInfo> {
    let mut out = vec![];
    let mut rest = xml;
    while let Some((response, after)) = element(rest, "response") {
        rest = after;
        let Some(href) = element(response, "href").map(|(t, _)| text(t)) else {
            continue;
        };
        let collection = element(response, "collection").is_some()
            || element(response, "resourcetype").is_some_and(|(t, _)| t.contains("collection"));
        // An href may be a full URL or a path; the name is its last segment.
        let path = decode_path(strip_origin(&href));
        let Some(name) = path.strip_prefix(base_path) else {
            continue;
        };
        if collection || name.is_empty() || name.contains('/') {
            continue;
        }
        out.push(ObjectInfo {
            name: name.to_string(),
            size: element(response, "getcontentlength").and_then(|(t, _)| text(t).parse().ok()),
            modified: element(response, "getlastmodified").and_then(|(t, _)| http_date(&text(t))),
        });
    }
    out
}

/// The content of the first element with this local name, and the text
/// after it. `<x/>` gives an empty content.
fn element<'a>(xml: &'a str, local: &str) -> Option<(&'a str, &'a str)> {
    let mut at = 0;
    while let Some(i) = xml[at..].find('<') {
        let start = at + i + 1;
        let end = start + xml[start..].find('>')?;
        let tag = &xml[start..end];
        at = end + 1;
        if tag.starts_with(['/', '?', '!']) {
            continue;
        }
        let name = tag
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        if name.rsplit(':').next() != Some(local) {
            continue;
        }
        if tag.ends_with('/') {
            return Some(("", &xml[at..]));
        }
        // The matching close tag, with the same (prefixed) name.
        let close = format!("</{name}>");
        let stop = xml[at..].find(&close)?;
        return Some((&xml[at..at + stop], &xml[at + stop + close.len()..]));
    }
    None
}

fn text(s: &str) -> String {
    s.trim()
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
}

fn strip_origin(href: &str) -> &str {
    match href.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => href,
    }
}

/// Seconds since the epoch of an RFC 1123 date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(s: &str) -> Option<u64> {
    let p: Vec<&str> = s.split_whitespace().collect();
    if p.len() != 6 || p[5] != "GMT" {
        return None;
    }
    let day: u64 = p[1].parse().ok()?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == p[2])? as u64 + 1;
    let year: u64 = p[3].parse().ok()?;
    let hms: Vec<u64> = p[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 || year < 1970 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<d:multistatus xmlns:d="DAV:">
<d:response><d:href>/dav/backups/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop></d:propstat></d:response>
<d:response><d:href>http://nas:8080/dav/backups/calls-20261122T043000Z.sql.zst</d:href><d:propstat><d:prop>
<d:getcontentlength>1234</d:getcontentlength><d:getlastmodified>Sun, 22 Nov 2026 04:31:00 GMT</d:getlastmodified><d:resourcetype/>
</d:prop></d:propstat></d:response>
<d:response><d:href>/dav/backups/a%20b%26c.bin</d:href><d:propstat><d:prop><d:getcontentlength>7</d:getcontentlength><d:resourcetype/></d:prop></d:propstat></d:response>
<d:response><d:href>/dav/backups/sub/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop></d:propstat></d:response>
</d:multistatus>"#;

    #[test]
    fn members_with_sizes_and_times() {
        let got = parse(ANSWER, "/dav/backups/");
        assert_eq!(
            got.len(),
            2,
            "{:?}",
            got.iter().map(|o| &o.name).collect::<Vec<_>>()
        );
        assert_eq!(got[0].name, "calls-20261122T043000Z.sql.zst");
        assert_eq!(got[0].size, Some(1234));
        assert_eq!(got[0].modified, Some(1795321860));
        assert_eq!(got[1].name, "a b&c.bin");
        assert_eq!(got[1].size, Some(7));
    }

    #[test]
    fn dates_parse() {
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(http_date("yesterday"), None);
    }
}
