//! `[destinations.NAME]` and `[notifiers.NAME]`: a plugin and its settings.
//! Only the plugin knows its keys, so the settings are kept as strings here
//! and checked against its `describe()` later (`plugin::configured`).

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::error::{Ctx, find_key_line};
use super::suggest::did_you_mean_prefix;

/// A destination or notifier: a plugin and its settings (`KEY_file` read).
#[derive(Debug, Clone)]
pub struct PluginRef {
    pub plugin: String,
    pub settings: BTreeMap<String, String>,
    /// Line of each setting, for errors found by the plugin's description.
    pub lines: BTreeMap<String, usize>,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct NotifierRef {
    pub plugin: PluginRef,
    pub on: Vec<Event>,
}

/// Events a notifier can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Success,
    Failure,
    VerifyFailed,
    UploadFailed,
    NotEnabled,
    /// Archive mode: the oldest file not yet at any destination has waited
    /// longer than `archive_lag`.
    ArchiveLag,
    /// Continuous WAL archiving: the job's WAL store passed a mark of
    /// `wal_store_limit` (50, 80, 95 %).
    WalLag,
}

impl Event {
    pub const ALL: [(&'static str, Event); 7] = [
        ("success", Event::Success),
        ("failure", Event::Failure),
        ("verify-failed", Event::VerifyFailed),
        ("upload-failed", Event::UploadFailed),
        ("not-enabled", Event::NotEnabled),
        ("archive-lag", Event::ArchiveLag),
        ("wal-lag", Event::WalLag),
    ];
    pub const DEFAULT: [Event; 4] = [
        Event::Failure,
        Event::VerifyFailed,
        Event::UploadFailed,
        Event::NotEnabled,
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(s, _)| *s)
            .unwrap_or("")
    }

    /// Whether a notifier with `on` hears this event: `on` names it; a lag
    /// notice (`archive-lag`, `wal-lag`: something is not yet protected)
    /// is also heard by notifiers that take `failure`, so the default `on`
    /// list (DESIGN.md's four) keeps receiving it, as before it had a name.
    pub fn heard_by(self, on: &[Event]) -> bool {
        on.contains(&self)
            || (matches!(self, Event::ArchiveLag | Event::WalLag) && on.contains(&Event::Failure))
    }
}

/// A notifier's `on = [...]`: the events it is told about.
pub(super) fn build_on(cx: &mut Ctx, name: &str, table: &Spanned<toml::Table>) -> Vec<Event> {
    let key = format!("notifiers.{name}.on");
    let Some(v) = table.get_ref().get("on") else {
        return Event::DEFAULT.to_vec();
    };
    let accepted: Vec<&str> = Event::ALL.iter().map(|(s, _)| *s).collect();
    // The line of `on = [...]` itself, not the table's header.
    let table_line = cx.line(table.span().start);
    let line = Some(find_key_line(cx.text, table_line, "on").unwrap_or(table_line));
    let Some(items) = v.as_array() else {
        cx.err_at_line(
            line,
            &key,
            format!(
                "must be a list, e.g. on = [\"failure\", \"success\"]; events: {}",
                accepted.join(", ")
            ),
        );
        return vec![];
    };
    let mut out = vec![];
    for item in items {
        match item
            .as_str()
            .and_then(|s| Event::ALL.iter().find(|(n, _)| *n == s))
        {
            Some((_, e)) => out.push(*e),
            None => {
                let hint = item
                    .as_str()
                    .map(|s| did_you_mean_prefix(s, &accepted))
                    .unwrap_or_default();
                cx.err_at_line(
                    line,
                    &key,
                    format!(
                        "unknown event {item}; {hint}events: {}",
                        accepted.join(", ")
                    ),
                );
            }
        }
    }
    out
}

/// A plugin table: `plugin = "..."` and its settings; `runner_keys` are the
/// runner's own keys in that table (a notifier's `on`), not passed on.
pub(super) fn build_plugin_ref(
    cx: &mut Ctx,
    section: &str,
    name: &str,
    table: &Spanned<toml::Table>,
    runner_keys: &[&str],
) -> Option<PluginRef> {
    let line = cx.line(table.span().start);
    let t = table.get_ref();
    let Some(plugin) = t.get("plugin").and_then(|v| v.as_str()) else {
        cx.err(
            Some(table.span().start),
            format!("{section}.{name}.plugin"),
            "missing: name the plugin, e.g. plugin = \"local-dir\" (see `offsite plugins list`)",
        );
        return None;
    };
    let mut settings = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (k, v) in t {
        if k == "plugin" || runner_keys.contains(&k.as_str()) {
            continue;
        }
        let full = format!("{section}.{name}.{k}");
        let key_line = find_key_line(cx.text, line, k).unwrap_or(line);
        let Some(value) = setting_value(v) else {
            cx.err_at_line(
                Some(key_line),
                full,
                "plugin settings are strings, numbers or booleans",
            );
            continue;
        };
        let (key, value) = match k.strip_suffix("_file") {
            Some(base) if t.contains_key(base) => {
                cx.err_at_line(
                    Some(key_line),
                    full,
                    format!("give either `{base}` or `{k}`, not both"),
                );
                continue;
            }
            Some(base) => match read_secret_file(Path::new(&value)) {
                Ok(secret) => (base.to_string(), secret),
                Err(e) => {
                    cx.err_at_line(Some(key_line), full, e);
                    continue;
                }
            },
            None => (k.clone(), value),
        };
        lines.insert(key.clone(), key_line);
        settings.insert(key, value);
    }
    Some(PluginRef {
        plugin: plugin.to_string(),
        settings,
        lines,
        line,
    })
}

/// A setting as the plugin receives it: a string; tables and arrays are not
/// settings.
fn setting_value(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A secret file holds the value; one trailing newline is not part of it.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    crate::limits::secret_file_mode(path)?;
    let s = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    Ok(s.strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&s)
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_lose_one_trailing_newline_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&f).unwrap(), "s3cret\n");
        std::fs::write(&f, "s3cret\r\n").unwrap();
        assert_eq!(read_secret_file(&f).unwrap(), "s3cret");
    }

    #[test]
    fn settings_are_scalars() {
        assert_eq!(
            setting_value(&toml::Value::Integer(21)).as_deref(),
            Some("21")
        );
        assert_eq!(
            setting_value(&toml::Value::Boolean(true)).as_deref(),
            Some("true")
        );
        assert_eq!(setting_value(&toml::Value::Array(vec![])), None);
    }

    #[test]
    fn archive_lag_is_heard_by_failure_notifiers_and_named_in_logs() {
        assert_eq!(Event::ArchiveLag.as_str(), "archive-lag");
        assert_eq!(Event::WalLag.as_str(), "wal-lag");
        assert!(Event::ArchiveLag.heard_by(&Event::DEFAULT));
        assert!(Event::WalLag.heard_by(&[Event::WalLag]));
        assert!(Event::ArchiveLag.heard_by(&[Event::ArchiveLag]));
        assert!(!Event::ArchiveLag.heard_by(&[Event::WalLag, Event::Success]));
        assert!(!Event::Failure.heard_by(&[Event::ArchiveLag]));
        for (name, e) in Event::ALL {
            assert_eq!(e.as_str(), name);
            assert!(e.heard_by(&[e]));
        }
    }
}
