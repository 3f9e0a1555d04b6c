//! Where the problems of a config are collected while it is read, located by
//! file, line and key, and the parsers every table shares (one value out of a
//! list, a whole number within a range).

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::suggest::did_you_mean_prefix;

/// One problem in the config, located.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found, one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where problems are collected while the file is read: every parser reports
/// here and goes on, so one `config check` names all of them.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    /// The 1-based line of a byte offset in the file.
    pub fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub fn err(
        &mut self,
        offset: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = offset.map(|o| self.line(o));
        self.err_at_line(line, key, message);
    }

    pub fn err_at_line(
        &mut self,
        line: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A problem with the value `s` of `key`.
    pub fn at<T>(&mut self, s: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.err(Some(s.span().start), key, message);
    }

    /// The value of `v` among `accepted` (name, value) pairs; else an error
    /// that suggests the nearest name and lists them all.
    pub fn one_of<T: Copy>(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        accepted: &[(&str, T)],
    ) -> Option<T> {
        let s = v.get_ref().as_str();
        if let Some((_, t)) = accepted.iter().find(|(name, _)| *name == s) {
            return Some(*t);
        }
        let names: Vec<&str> = accepted.iter().map(|(n, _)| *n).collect();
        let hint = did_you_mean_prefix(s, &names);
        self.at(
            v,
            key,
            format!(
                "`{s}` is not accepted; {hint}accepted: {}",
                names.join(" | ")
            ),
        );
        None
    }

    /// A whole number within `range`; else the error `message(value)` and
    /// `default`. An absent key is `default`.
    pub fn ranged<T: TryFrom<i64>>(
        &mut self,
        v: Option<&Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
        default: T,
        message: impl FnOnce(i64) -> String,
    ) -> T {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        match T::try_from(n) {
            Ok(t) if range.contains(&n) => t,
            _ => {
                self.at(v, key, message(n));
                default
            }
        }
    }
}

/// The line of `key = ` at or after a table's header line.
pub(super) fn find_key_line(text: &str, from_line: usize, key: &str) -> Option<usize> {
    for (i, l) in text.lines().enumerate().skip(from_line.saturating_sub(1)) {
        let t = l.trim_start();
        if i + 1 > from_line && t.starts_with('[') {
            return None;
        }
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(text: &str) -> Ctx<'_> {
        Ctx {
            file: Path::new("/etc/offsite/offsite.toml"),
            text,
            errors: vec![],
        }
    }

    fn spanned<T: serde::de::DeserializeOwned>(text: &str) -> Spanned<T> {
        #[derive(serde::Deserialize)]
        struct V<T> {
            v: Spanned<T>,
        }
        toml::from_str::<V<T>>(text).unwrap().v
    }

    #[test]
    fn one_of_names_the_nearest_and_every_accepted_value() {
        let text = "\nv = \"gzp\"";
        let mut c = cx(text);
        let v = spanned::<String>(text);
        let accepted = [("zstd", 1), ("gzip", 2), ("none", 3)];
        assert_eq!(c.one_of(&v, "jobs.a.compression", &accepted), None);
        assert_eq!(
            c.errors[0].to_string(),
            "/etc/offsite/offsite.toml:2: `jobs.a.compression`: `gzp` is not accepted; did you mean `gzip`? accepted: zstd | gzip | none"
        );
        let v = spanned::<String>("v = \"none\"");
        assert_eq!(c.one_of(&v, "k", &accepted), Some(3));
        assert_eq!(c.errors.len(), 1);
    }

    #[test]
    fn ranged_keeps_the_default_and_reports_out_of_range() {
        let text = "v = 300";
        let mut c = cx(text);
        let v = spanned::<i64>(text);
        let n: u32 = c.ranged(Some(&v), "k", 0..=256, 7, |n| format!("{n} too big"));
        assert_eq!(n, 7);
        assert_eq!(c.errors[0].message, "300 too big");
        let n: u32 = c.ranged(None, "k", 0..=256, 7, |_| unreachable!());
        assert_eq!(n, 7);
        let v = spanned::<i64>("v = -1");
        let n: usize = c.ranged(Some(&v), "k", -5..=5, 1, |n| format!("{n}"));
        assert_eq!((n, c.errors.len()), (1, 2), "-1 is no usize");
    }

    #[test]
    fn key_lines_stop_at_the_next_table() {
        let text = "[a]\nx = 1\n[b]\ny = 2\n";
        assert_eq!(find_key_line(text, 1, "x"), Some(2));
        assert_eq!(find_key_line(text, 1, "y"), None);
        assert_eq!(find_key_line(text, 3, "y"), Some(4));
    }
}
