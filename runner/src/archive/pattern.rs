//! The patterns `find` and `restore --match` take, and how the catalog
//! answers them without reading every path: a pattern's literal prefix
//! (the bytes before its first `*`, `?` or `[`) becomes a range over an
//! index — of whole paths when the pattern has a `/`, else of file names
//! (the `paths.name` column) — and only the paths in that range are
//! matched with SQLite GLOB. A pattern that starts with a wildcard is
//! matched against the paths table alone (names or paths, never the
//! members joined), then joined to its members.

/// A glob over path bytes (SQLite GLOB: `*`, `?`, `[...]`; case-sensitive;
/// not necessarily UTF-8: a recorder's Latin-1 names match byte for byte).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// With a `/`: over the whole path (`*` also crosses `/`).
    Path(Vec<u8>),
    /// Without one: over the file name, in any folder.
    Name(Vec<u8>),
}

impl Pattern {
    /// `pattern` as the command line gives it.
    pub fn parse(pattern: &[u8]) -> Pattern {
        if pattern.contains(&b'/') {
            Pattern::Path(pattern.to_vec())
        } else {
            Pattern::Name(pattern.to_vec())
        }
    }

    /// The glob itself.
    pub fn glob(&self) -> &[u8] {
        match self {
            Pattern::Path(g) | Pattern::Name(g) => g,
        }
    }

    /// The column of `paths` the glob is matched against.
    pub fn column(&self) -> &'static str {
        match self {
            Pattern::Path(_) => "path",
            Pattern::Name(_) => "name",
        }
    }

    /// The literal bytes every match starts with.
    pub fn prefix(&self) -> &[u8] {
        let g = self.glob();
        let end = g
            .iter()
            .position(|b| matches!(b, b'*' | b'?' | b'['))
            .unwrap_or(g.len());
        &g[..end]
    }

    /// The index range `[low, high)` holding every match: `None` when the
    /// pattern starts with a wildcard (no range helps); `high` is `None`
    /// when no byte string bounds the prefix from above (all `0xff`).
    pub fn range(&self) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        let p = self.prefix();
        (!p.is_empty()).then(|| (p.to_vec(), successor(p)))
    }
}

/// The smallest byte string greater than every string starting with `p`.
fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// The file name of `path`: the bytes after its last `/`.
pub fn name_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_ranges() {
        let p = Pattern::parse(b"call-0042*");
        assert_eq!(p, Pattern::Name(b"call-0042*".to_vec()));
        assert_eq!(p.column(), "name");
        assert_eq!(
            p.range(),
            Some((b"call-0042".to_vec(), Some(b"call-0043".to_vec())))
        );
        let p = Pattern::parse(b"/srv/calls/d0004?/*.wav");
        assert_eq!(p.column(), "path");
        assert_eq!(p.prefix(), b"/srv/calls/d0004");
        assert_eq!(Pattern::parse(b"*.wav").range(), None);
        assert_eq!(Pattern::parse(b"[ab]*").range(), None);
        let exact = Pattern::parse(b"a.wav");
        assert_eq!(exact.range().unwrap().1.unwrap(), b"a.waw".to_vec());
        assert_eq!(successor(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff"), None);
        // Latin-1 names are bytes, not text.
        let l1 = Pattern::parse(b"Gespr\xe4ch*");
        assert_eq!(
            l1.range().unwrap(),
            (b"Gespr\xe4ch".to_vec(), Some(b"Gespr\xe4ci".to_vec()))
        );
    }

    #[test]
    fn names() {
        assert_eq!(name_of(b"/a/b/c.wav"), b"c.wav");
        assert_eq!(name_of(b"c.wav"), b"c.wav");
        assert_eq!(name_of(b"/a/"), b"");
    }
}
