//! Checking an operator's settings against what a plugin's `describe()` says
//! it takes, before any run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::bindings::wit::{PluginInfo, SettingRole};
use crate::config::suggest::hint;

/// Settings checked against a plugin's description: every required key
/// present, no unknown key, defaults filled in. Secrets are redacted in
/// `Debug` so a stray `{:?}` cannot leak them.
#[derive(Clone, Default)]
pub struct ResolvedSettings {
    values: BTreeMap<String, String>,
    secrets: BTreeSet<String>,
    roles: BTreeMap<String, SettingRole>,
}

impl ResolvedSettings {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn pairs(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// (key, value) of every setting with this role.
    pub fn with_role(&self, role: SettingRole) -> impl Iterator<Item = (&str, &str)> {
        self.roles
            .iter()
            .filter(move |(_, r)| **r == role)
            .filter_map(|(k, _)| self.values.get(k).map(|v| (k.as_str(), v.as_str())))
    }

    /// A value as it may be shown to a person: secrets as `********`.
    pub fn display_value(&self, key: &str) -> Option<String> {
        let v = self.values.get(key)?;
        Some(if self.secrets.contains(key) {
            "********".to_string()
        } else {
            v.clone()
        })
    }

    /// Every secret value, so log lines and errors can be scrubbed of them.
    pub fn secret_values(&self) -> Vec<String> {
        self.secrets
            .iter()
            .filter_map(|k| self.values.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
            .collect()
    }
}

impl fmt::Debug for ResolvedSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for k in self.values.keys() {
            m.entry(k, &self.display_value(k).unwrap_or_default());
        }
        m.finish()
    }
}

/// One thing wrong with a destination's or notifier's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingProblem {
    /// The key the problem is about (as written, or as expected).
    pub key: String,
    pub message: String,
}

impl fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// Check `raw` (key → value, `KEY_file` already read by the caller) against
/// the plugin's declared settings. All problems are reported at once.
pub fn resolve(
    info: &PluginInfo,
    raw: &BTreeMap<String, String>,
) -> Result<ResolvedSettings, Vec<SettingProblem>> {
    let mut problems = Vec::new();
    let known: Vec<&str> = info.settings.iter().map(|s| s.key.as_str()).collect();
    for key in raw.keys() {
        if !known.contains(&key.as_str()) {
            let hint = hint(key, &known, "it takes no settings", "it takes");
            problems.push(SettingProblem {
                key: key.clone(),
                message: format!("plugin `{}` has no such setting; {hint}", info.name),
            });
        }
    }
    let mut out = ResolvedSettings::default();
    for s in &info.settings {
        let value = raw.get(&s.key).cloned().or_else(|| s.default.clone());
        match value {
            Some(v) => {
                out.values.insert(s.key.clone(), v);
            }
            None if s.required => problems.push(SettingProblem {
                key: s.key.clone(),
                message: format!(
                    "required by plugin `{}` but not set ({}){}",
                    info.name,
                    s.description,
                    if s.secret {
                        format!(
                            "; a secret may also be read from a file with `{}_file`",
                            s.key
                        )
                    } else {
                        String::new()
                    }
                ),
            }),
            None => {}
        }
        if s.secret {
            out.secrets.insert(s.key.clone());
        }
        out.roles.insert(s.key.clone(), s.role);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::wit::{PluginKind, Setting};

    fn info() -> PluginInfo {
        let s = |key: &str, required, secret, default: Option<&str>| Setting {
            key: key.into(),
            description: format!("the {key}"),
            required,
            secret,
            default: default.map(Into::into),
            role: SettingRole::Plain,
        };
        PluginInfo {
            name: "x".into(),
            version: "1.0.0".into(),
            kind: PluginKind::Destination,
            summary: String::new(),
            settings: vec![
                s("host", true, false, None),
                s("port", false, false, Some("21")),
                s("password", true, true, None),
            ],
        }
    }

    #[test]
    fn unknown_key_gets_a_suggestion_and_missing_required_is_named() {
        let raw = BTreeMap::from([("hots".to_string(), "a".to_string())]);
        let p = resolve(&info(), &raw).unwrap_err();
        assert!(
            p.iter()
                .any(|p| p.key == "hots" && p.message.contains("`host`"))
        );
        assert!(
            p.iter()
                .any(|p| p.key == "host" && p.message.contains("required"))
        );
        assert!(
            p.iter()
                .any(|p| p.key == "password" && p.message.contains("password_file"))
        );
    }

    #[test]
    fn defaults_are_filled_and_secrets_redacted() {
        let raw = BTreeMap::from([
            ("host".to_string(), "h".to_string()),
            ("password".to_string(), "hunter2".to_string()),
        ]);
        let r = resolve(&info(), &raw).unwrap();
        assert_eq!(r.get("port"), Some("21"));
        assert!(!format!("{r:?}").contains("hunter2"));
        assert_eq!(r.secret_values(), vec!["hunter2".to_string()]);
    }
}
