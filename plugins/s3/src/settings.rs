//! The operator's settings, checked once in `configure` (no I/O there: it
//! also runs for `offsite config check`).

use offsite_sdk::{Error, PluginInfo, Setting, SettingRole, Settings};
use url::Url;

/// S3 refuses parts below 5 MiB (all but the last) and above 5 GiB.
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html>
pub const MIN_PART: u64 = 5 << 20;
pub const MAX_PART: u64 = 5 << 30;
/// A multipart upload has at most 10,000 parts.
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest object.
pub const MAX_OBJECT: u64 = 5 << 40;
pub const DEFAULT_PART: u64 = 16 << 20;
pub const DEFAULT_PARALLEL: usize = 4;
pub const MAX_PARALLEL: usize = 64;
/// Every part in flight is held in the plugin's linear memory (its MD5 goes
/// in the request headers, before the body), and the runner caps that
/// memory (`[runner] plugin_memory`, 256 MiB by default). This leaves room
/// for the rest of the plugin under the default cap.
pub const PART_MEMORY_BUDGET: u64 = 192 << 20;

/// Checked settings of one destination.
#[derive(Clone, Debug)]
pub struct Config {
    pub endpoint: Url,
    pub region: String,
    pub bucket: String,
    /// Put before every object name: the key is `prefix + name`.
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub path_style: bool,
    pub storage_class: Option<String>,
    pub part_size: u64,
    pub parallel_parts: usize,
    /// In a versioned bucket, rotation deletes every version of the keys it
    /// removes (instead of leaving a delete marker over them).
    pub remove_versions: bool,
}

pub fn describe() -> PluginInfo {
    PluginInfo::destination(
        "s3",
        env!("CARGO_PKG_VERSION"),
        "Keeps generations in an S3 bucket (AWS or any S3-compatible server), multipart uploads with parts in flight",
    )
    .setting(
        Setting::new(
            "endpoint",
            "http:// or https:// URL of the S3 service, e.g. https://s3.eu-west-1.amazonaws.com; the plugin may reach this host:port only",
        )
        .required()
        .role(SettingRole::HttpUrl),
    )
    .setting(
        Setting::new("region", "region the requests are signed for (SigV4)").default("us-east-1"),
    )
    .setting(Setting::new("bucket", "name of an existing bucket").required())
    .setting(
        Setting::new(
            "prefix",
            "put before every object name, e.g. `calls/` (the key is prefix + name)",
        )
        .default(""),
    )
    .setting(Setting::new("access_key_id", "access key ID of the credentials").required())
    .setting(
        Setting::new("secret_access_key", "secret access key of the credentials")
            .required()
            .secret(),
    )
    .setting(
        Setting::new(
            "session_token",
            "session token, for temporary credentials (STS) only",
        )
        .secret(),
    )
    .setting(Setting::new(
        "path_style",
        "address the bucket as endpoint/bucket (true) or bucket.endpoint (false); default true, except false for *.amazonaws.com",
    ))
    .setting(Setting::new(
        "storage_class",
        "x-amz-storage-class of new objects, e.g. STANDARD_IA; default: the bucket's",
    ))
    .setting(
        Setting::new(
            "part_size",
            "uploads larger than this are sent as multipart uploads in parts of this size; 5MiB to 5GiB",
        )
        .default("16MiB"),
    )
    .setting(
        Setting::new(
            "remove_versions",
            "in a versioned bucket, rotation deletes every version of a generation it drops (true) instead of a delete marker that keeps the space used (false); needs s3:ListBucketVersions and s3:DeleteObjectVersion",
        )
        .default("false"),
    )
    .setting(
        Setting::new(
            "parallel_parts",
            "parts of one multipart upload in flight at once; each is held in memory",
        )
        .default("4"),
    )
    // `tls_ca` / `tls_insecure`: applied by the runner, which does TLS.
    .settings(offsite_sdk::http::tls_settings())
}

impl Config {
    pub fn from_settings(s: &Settings) -> Result<Config, Error> {
        let endpoint = parse_endpoint(s.required("endpoint")?)?;
        let region = s.get("region").unwrap_or("us-east-1").trim().to_string();
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(config(format!(
                "setting `region` = {region:?} is not a region name such as us-east-1"
            )));
        }
        let path_style = match s.flag("path_style")? {
            Some(v) => v,
            None => !is_aws(&endpoint),
        };
        let bucket = s.required("bucket")?.trim().to_string();
        check_bucket(&bucket, path_style)?;
        let prefix = s.get("prefix").unwrap_or("").to_string();
        if prefix.starts_with('/') {
            return Err(config(format!(
                "setting `prefix` = {prefix:?} must not start with `/`; write e.g. `calls/`"
            )));
        }
        if prefix.len() > 512 {
            return Err(config(
                "setting `prefix` is longer than 512 bytes; S3 keys have at most 1024".into(),
            ));
        }
        let access_key_id = s.required("access_key_id")?.trim().to_string();
        if access_key_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(config(
                "setting `access_key_id` contains white space; write the key ID alone".into(),
            ));
        }
        let secret_access_key = s
            .required("secret_access_key")?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if secret_access_key.chars().any(char::is_control) {
            return Err(config(
                "setting `secret_access_key` contains control characters; give the key alone (a file's trailing newline is fine)".into(),
            ));
        }
        let session_token = s
            .get("session_token")
            .map(|t| t.trim_end_matches(['\r', '\n']).to_string());
        let storage_class = s.get("storage_class").map(|c| c.trim().to_string());
        if let Some(c) = &storage_class
            && !c
                .chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
        {
            return Err(config(format!(
                "setting `storage_class` = {c:?} is not a storage class such as STANDARD, STANDARD_IA, GLACIER_IR"
            )));
        }
        let part_size = match s.get("part_size") {
            Some(v) => parse_size(v).ok_or_else(|| {
                config(format!(
                    "setting `part_size` = {v:?} is not a size; write e.g. 16MiB, 64MiB or a number of bytes"
                ))
            })?,
            None => DEFAULT_PART,
        };
        if !(MIN_PART..=MAX_PART).contains(&part_size) {
            return Err(config(format!(
                "setting `part_size` = {} is outside what S3 accepts: 5MiB to 5GiB",
                show_size(part_size)
            )));
        }
        let parallel_parts = s
            .parse::<usize>("parallel_parts")?
            .unwrap_or(DEFAULT_PARALLEL);
        if !(1..=MAX_PARALLEL).contains(&parallel_parts) {
            return Err(config(format!(
                "setting `parallel_parts` = {parallel_parts} must be between 1 and {MAX_PARALLEL}"
            )));
        }
        let in_memory = part_size * parallel_parts as u64;
        if in_memory > PART_MEMORY_BUDGET {
            return Err(config(format!(
                "`parallel_parts` × `part_size` = {parallel_parts} × {} = {} would be held in the plugin's memory at once; keep it at most {} (the runner caps a plugin's memory, [runner] plugin_memory, 256MiB by default)",
                show_size(part_size),
                show_size(in_memory),
                show_size(PART_MEMORY_BUDGET)
            )));
        }
        let remove_versions = s.flag("remove_versions")?.unwrap_or(false);
        Ok(Config {
            remove_versions,
            endpoint,
            region,
            bucket,
            prefix,
            access_key_id,
            secret_access_key,
            session_token,
            path_style,
            storage_class,
            part_size,
            parallel_parts,
        })
    }

    /// The object key of a generation name.
    pub fn key(&self, name: &str) -> Result<String, Error> {
        let ok = !name.is_empty()
            && !name.contains('/')
            && !name.contains('\\')
            && !name.chars().any(char::is_control)
            && name != "."
            && name != "..";
        if !ok {
            return Err(config(format!(
                "object name {name:?} is not a plain file name"
            )));
        }
        let key = format!("{}{name}", self.prefix);
        if key.len() > 1024 {
            return Err(config(format!(
                "the key {key:?} is longer than the 1024 bytes S3 allows; shorten `prefix`"
            )));
        }
        Ok(key)
    }

    /// The part size used for an object of `size` bytes: the configured one,
    /// grown when the object would need more than 10,000 parts.
    pub fn part_size_for(&self, size: u64) -> Result<u64, Error> {
        if size > MAX_OBJECT {
            return Err(Error::Rejected(format!(
                "{} is larger than S3's largest object, 5TiB",
                show_size(size)
            )));
        }
        let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
        Ok(self.part_size.max(needed))
    }

    /// Parts in flight for parts of `part` bytes: `parallel_parts`, fewer
    /// when a grown part size would not fit the memory budget.
    pub fn parallel_for(&self, part: u64) -> usize {
        let fit = (PART_MEMORY_BUDGET / part).max(1) as usize;
        self.parallel_parts.min(fit)
    }
}

fn config(m: String) -> Error {
    Error::Config(m)
}

fn parse_endpoint(v: &str) -> Result<Url, Error> {
    let bad = |why: &str| {
        config(format!(
            "setting `endpoint` = {v:?} {why}; write e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000"
        ))
    };
    let url = Url::parse(v.trim()).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "carries credentials; give them in `access_key_id` and `secret_access_key`",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a query or fragment"));
    }
    Ok(url)
}

/// AWS's own endpoints default to virtual-hosted–style addressing.
fn is_aws(url: &Url) -> bool {
    url.host_str()
        .is_some_and(|h| h == "amazonaws.com" || h.ends_with(".amazonaws.com"))
}

/// S3 bucket naming rules, relaxed for S3-compatible servers with path-style
/// addressing (some allow upper case and `_`); a virtual-hosted bucket must
/// be a DNS label sequence.
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html>
fn check_bucket(b: &str, path_style: bool) -> Result<(), Error> {
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '.'
            || c == '-'
            || (path_style && (c.is_ascii_uppercase() || c == '_'))
    };
    if b.len() < 3 || b.len() > 255 || !b.chars().all(allowed) || (!path_style && b.len() > 63) {
        return Err(config(format!(
            "setting `bucket` = {b:?} is not a bucket name: 3 to 63 characters of a-z, 0-9, `.` and `-`{}",
            if path_style {
                ""
            } else {
                " (virtual-hosted style, `path_style` = false)"
            }
        )));
    }
    Ok(())
}

/// `16MiB`, `16M`, `1GiB`, `8388608`: binary units, as the AWS CLI's
/// `multipart_chunksize` reads them.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

pub fn show_size(n: u64) -> String {
    match n {
        n if n >= 1 << 40 && n % (1 << 40) == 0 => format!("{}TiB", n >> 40),
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 20 => format!("{:.1}MiB", n as f64 / 1048576.0),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut all: Vec<(String, String)> = [
            ("endpoint", "http://127.0.0.1:9000"),
            ("bucket", "backups"),
            ("access_key_id", "AKID"),
            ("secret_access_key", "secret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.to_string()));
        }
        Settings::from_pairs(all)
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match Config::from_settings(&settings(pairs)) {
            Err(Error::Config(m)) => m,
            Err(e) => panic!("not a config error: {e:?}"),
            Ok(_) => panic!("accepted {pairs:?}"),
        }
    }

    #[test]
    fn defaults_fit_a_custom_endpoint() {
        let c = Config::from_settings(&settings(&[])).unwrap();
        assert!(c.path_style);
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.part_size, 16 << 20);
        assert_eq!(c.parallel_parts, 4);
        assert_eq!(c.key("a.sql.zst").unwrap(), "a.sql.zst");
        let aws = Config::from_settings(&settings(&[(
            "endpoint",
            "https://s3.eu-west-1.amazonaws.com",
        )]))
        .unwrap();
        assert!(!aws.path_style);
    }

    #[test]
    fn bad_values_name_the_setting() {
        assert!(err(&[("endpoint", "ftp://x")]).contains("`endpoint`"));
        assert!(err(&[("endpoint", "http://u:p@x")]).contains("carries credentials"));
        assert!(err(&[("part_size", "1MiB")]).contains("`part_size` = 1MiB"));
        assert!(err(&[("part_size", "lots")]).contains("not a size"));
        assert!(err(&[("parallel_parts", "0")]).contains("`parallel_parts`"));
        assert!(err(&[("parallel_parts", "16"), ("part_size", "64MiB")]).contains("plugin_memory"));
        assert!(err(&[("bucket", "a")]).contains("`bucket`"));
        assert!(err(&[("prefix", "/x/")]).contains("`prefix`"));
        assert!(err(&[("storage_class", "cheap one")]).contains("`storage_class`"));
        assert!(err(&[("path_style", "maybe")]).contains("`path_style`"));
    }

    #[test]
    fn keys_are_prefix_plus_a_plain_name() {
        let c = Config::from_settings(&settings(&[("prefix", "calls/")])).unwrap();
        assert_eq!(c.key("x.zst").unwrap(), "calls/x.zst");
        assert!(c.key("../x").is_err());
        assert!(c.key("").is_err());
    }

    #[test]
    fn part_size_grows_for_huge_objects_and_parallelism_shrinks_to_fit() {
        let c = Config::from_settings(&settings(&[])).unwrap();
        assert_eq!(c.part_size_for(1 << 30).unwrap(), 16 << 20);
        // 1 TiB / 10,000 parts = 104.9 MiB, rounded up to whole MiB.
        let p = c.part_size_for(1 << 40).unwrap();
        assert_eq!(p, 105 << 20);
        assert!(p * MAX_PARTS >= 1 << 40);
        assert_eq!(c.parallel_for(p), 1);
        assert!(c.part_size_for(6 << 40).is_err());
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("8M"), Some(8 << 20));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("5242880"), Some(5 << 20));
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("3 parsecs"), None);
    }
}
