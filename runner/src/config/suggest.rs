//! "Did you mean": every error about a name the user wrote (a key, a job, a
//! destination, a plugin, a plugin setting, an event, an accepted value) ends
//! with the nearest known name, or else with what is known. The wording of
//! that ending lives here once; callers only say what the list is called.

/// The closest known name, if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// `did you mean `x`?` when a known name is close to `word`.
pub fn did_you_mean(word: &str, known: &[&str]) -> Option<String> {
    suggest(word, known).map(|s| format!("did you mean `{s}`?"))
}

/// [`did_you_mean`] followed by a space, or nothing: the prefix of a sentence
/// that goes on to list what is accepted.
pub fn did_you_mean_prefix(word: &str, known: &[&str]) -> String {
    did_you_mean(word, known)
        .map(|h| h + " ")
        .unwrap_or_default()
}

/// The end of a "no such name" error: the nearest name, else `none` when
/// nothing is known, else `listed: a, b, c`.
pub fn hint(word: &str, known: &[&str], none: &str, listed: &str) -> String {
    match did_you_mean(word, known) {
        Some(h) => h,
        None if known.is_empty() => none.to_string(),
        None => format!("{listed}: {}", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_nearest_name_and_strangers_the_list() {
        assert_eq!(suggest("kep", &["keep", "level"]), Some("keep"));
        assert_eq!(suggest("x", &["keep"]), None);
        assert_eq!(
            hint("nsa", &["nas", "s3"], "none", "defined"),
            "did you mean `nas`?"
        );
        assert_eq!(
            hint("tape", &["nas", "s3"], "none", "defined"),
            "defined: nas, s3"
        );
        assert_eq!(hint("tape", &[], "none defined", "defined"), "none defined");
        assert_eq!(
            did_you_mean_prefix("gzp", &["zstd", "gzip"]),
            "did you mean `gzip`? "
        );
        assert_eq!(did_you_mean_prefix("lz4", &["zstd", "gzip"]), "");
    }
}
