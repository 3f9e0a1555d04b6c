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
