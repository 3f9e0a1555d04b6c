//! Just enough SQL lexing for the scripts offsite rewrites (pg_dumpall's
//! roles, pg_dump's database-level statements): where quoted text starts
//! and ends, and identifiers.

/// Where a line of SQL text leaves us: inside a string or identifier that
/// continues on the next line, or not. Enough for pg_dumpall output, which
/// uses standard-conforming strings and no dollar quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuoteState {
    Normal,
    Single,
    Double,
}

impl QuoteState {
    pub fn after(self, line: &str) -> QuoteState {
        let mut state = self;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            state = match (state, c) {
                (QuoteState::Normal, '\'') => QuoteState::Single,
                (QuoteState::Normal, '"') => QuoteState::Double,
                (QuoteState::Normal, '-') if chars.peek() == Some(&'-') => break,
                (QuoteState::Single, '\'') => QuoteState::Normal,
                (QuoteState::Double, '"') => QuoteState::Normal,
                (s, _) => s,
            };
        }
        state
    }
}

/// Parses an SQL identifier at the start of `s` (bare or double-quoted) and
/// returns it unquoted, with the rest of the string.
pub(crate) fn parse_ident(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if let Some((_, '"')) = chars.peek() {
                    chars.next();
                    name.push('"');
                } else {
                    return Some((name, &rest[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        if end == 0 {
            return None;
        }
        Some((s[..end].to_lowercase(), &s[end..]))
    }
}

/// SQL identifier quoting as PostgreSQL's `quote_ident` does it.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && !is_keyword(name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Reserved words that would need quoting as a database name; quoting an
/// unreserved one too is harmless.
fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "all"
            | "analyse"
            | "analyze"
            | "and"
            | "any"
            | "array"
            | "as"
            | "asc"
            | "asymmetric"
            | "both"
            | "case"
            | "cast"
            | "check"
            | "collate"
            | "column"
            | "constraint"
            | "create"
            | "current_catalog"
            | "current_date"
            | "current_role"
            | "current_time"
            | "current_timestamp"
            | "current_user"
            | "default"
            | "deferrable"
            | "desc"
            | "distinct"
            | "do"
            | "else"
            | "end"
            | "except"
            | "false"
            | "fetch"
            | "for"
            | "foreign"
            | "from"
            | "grant"
            | "group"
            | "having"
            | "in"
            | "initially"
            | "intersect"
            | "into"
            | "lateral"
            | "leading"
            | "limit"
            | "localtime"
            | "localtimestamp"
            | "not"
            | "null"
            | "offset"
            | "on"
            | "only"
            | "or"
            | "order"
            | "placing"
            | "primary"
            | "references"
            | "returning"
            | "select"
            | "session_user"
            | "some"
            | "symmetric"
            | "table"
            | "then"
            | "to"
            | "trailing"
            | "true"
            | "union"
            | "unique"
            | "user"
            | "using"
            | "variadic"
            | "when"
            | "where"
            | "window"
            | "with"
            | "database"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents() {
        assert_eq!(parse_ident("app;"), Some(("app".into(), ";")));
        assert_eq!(
            parse_ident("\"A\"\"b\" WITH"),
            Some(("A\"b".into(), " WITH"))
        );
        assert_eq!(parse_ident(";"), None);
    }
}
