//! The file's shapes as written: every table and key, with the spans errors
//! point at. serde refuses unknown keys here; [`explain_serde`] turns its
//! message into one that suggests the nearest accepted key.
//!
//! A new key is a field here, its name in the matching `*_KEYS` list, and a
//! parser in the module of its table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::suggest::did_you_mean;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub runner: Option<Spanned<RawRunner>>,
    #[serde(default)]
    pub destinations: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    pub notifiers: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    pub jobs: BTreeMap<String, Spanned<RawJob>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRunner {
    pub backup_dir: Option<Spanned<PathBuf>>,
    pub plugins_dir: Option<Spanned<PathBuf>>,
    pub state_dir: Option<Spanned<PathBuf>>,
    pub log_file: Option<Spanned<PathBuf>>,
    pub max_parallel: Option<Spanned<i64>>,
    pub plugin_memory: Option<Spanned<String>>,
    pub plugin_timeout: Option<Spanned<String>>,
    pub transfer_timeout: Option<Spanned<String>>,
    pub stall_timeout: Option<Spanned<String>>,
    pub debug_plugins: Option<bool>,
    pub shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub source: Option<Spanned<String>>,
    pub dsn: Option<Spanned<String>>,
    pub dsn_file: Option<Spanned<PathBuf>>,
    pub format: Option<Spanned<String>>,
    pub jobs: Option<Spanned<i64>>,
    #[serde(default)]
    pub paths: Vec<Spanned<PathBuf>>,
    pub compression: Option<Spanned<String>>,
    pub level: Option<Spanned<i64>>,
    pub threads: Option<Spanned<i64>>,
    pub keep: Option<Spanned<i64>>,
    pub max_local: Option<Spanned<i64>>,
    pub schedule: Option<Spanned<String>>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub destinations: Vec<Spanned<String>>,
    #[serde(default)]
    pub notifiers: Vec<Spanned<String>>,
    pub verify: Option<Spanned<String>>,
    pub verify_dsn: Option<Spanned<String>>,
    pub before: Option<Spanned<PathBuf>>,
    pub after: Option<Spanned<PathBuf>>,
    pub complete: Option<Spanned<PathBuf>>,
    pub hook_timeout: Option<Spanned<String>>,
    pub allow_empty: Option<bool>,
    // WAL archiving, read by `config::wal` from here (serde's `flatten`
    // does not combine with `deny_unknown_fields` nor keep toml's spans).
    pub wal: Option<Spanned<bool>>,
    pub wal_dir: Option<Spanned<PathBuf>>,
    pub wal_store_limit: Option<Spanned<String>>,
    pub wal_lag: Option<Spanned<String>>,
    pub wal_prefetch: Option<Spanned<i64>>,
    pub hot_backup: Option<Spanned<PathBuf>>,
    // source = "archive" (see `config::archive`)
    pub volume_size: Option<Spanned<String>>,
    pub seal_after: Option<Spanned<String>>,
    pub archive_keep: Option<Spanned<String>>,
    pub archive_lag: Option<Spanned<String>>,
}

const TOP_KEYS: &[&str] = &["runner", "destinations", "notifiers", "jobs"];
const RUNNER_KEYS: &[&str] = &[
    "backup_dir",
    "plugins_dir",
    "state_dir",
    "log_file",
    "max_parallel",
    "plugin_memory",
    "plugin_timeout",
    "transfer_timeout",
    "stall_timeout",
    "debug_plugins",
    "shutdown_grace",
];
const JOB_KEYS: &[&str] = &[
    "source",
    "dsn",
    "dsn_file",
    "format",
    "jobs",
    "paths",
    "compression",
    "level",
    "threads",
    "keep",
    "max_local",
    "schedule",
    "enabled",
    "destinations",
    "notifiers",
    "verify",
    "verify_dsn",
    "before",
    "after",
    "complete",
    "hook_timeout",
    "allow_empty",
    "wal",
    "wal_dir",
    "wal_store_limit",
    "wal_lag",
    "wal_prefetch",
    "hot_backup",
    "volume_size",
    "seal_after",
    "archive_keep",
    "archive_lag",
];

/// serde's "unknown field `kep`, expected one of ..." plus a suggestion.
pub(super) fn explain_serde(
    message: &str,
    text: &str,
    span: Option<std::ops::Range<usize>>,
) -> String {
    let msg = message.trim().to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let word = rest.split('`').next().unwrap_or_default();
        // Which table the key is in decides which keys are accepted.
        let section = span.map(|s| section_of(text, s.start)).unwrap_or_default();
        let known: &[&str] = if section.starts_with("jobs.") {
            JOB_KEYS
        } else if section == "runner" {
            RUNNER_KEYS
        } else {
            TOP_KEYS
        };
        return match did_you_mean(word, known) {
            Some(h) => format!("unknown key `{word}`: {h}"),
            None => format!("unknown key `{word}`; accepted here: {}", known.join(", ")),
        };
    }
    msg
}

/// The `[table]` header in force at `offset`.
fn section_of(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a raw shape is in its list of accepted keys, so the
    /// suggestion for a typo can be any key (and no list names a key serde
    /// would refuse).
    #[test]
    fn key_lists_match_the_raw_shapes() {
        for (table, keys) in [("[runner]", RUNNER_KEYS), ("[jobs.a]", JOB_KEYS)] {
            for key in keys {
                let text = format!("{table}\n{key} = 0\n");
                let e = toml::from_str::<RawFile>(&text)
                    .err()
                    .map(|e| e.to_string());
                assert!(
                    !e.unwrap_or_default().contains("unknown field"),
                    "{table} {key}"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_are_explained_by_their_table() {
        let text = "[runner]\nbackup_dri = \"/x\"\n[jobs.db]\nkep = 3\n";
        let at = |needle: &str| text.find(needle).map(|s| s..s + 1);
        assert_eq!(
            explain_serde(
                "unknown field `backup_dri`, expected ...",
                text,
                at("backup_dri")
            ),
            "unknown key `backup_dri`: did you mean `backup_dir`?"
        );
        assert_eq!(
            explain_serde("unknown field `kep`, expected ...", text, at("kep")),
            "unknown key `kep`: did you mean `keep`?"
        );
        assert_eq!(
            explain_serde(
                "unknown field `zzzzzz`, expected ...",
                "zzzzzz = 1",
                Some(0..1)
            ),
            "unknown key `zzzzzz`; accepted here: runner, destinations, notifiers, jobs"
        );
    }
}
