//! Holds `runner/src` to `ARCHITECTURE.md` and to issue 16's size rules.
//!
//! - No file over [`MAX_CODE_LINES`] lines of code: blank lines, comment
//!   lines and `#[cfg(test)]` items do not count.
//! - No function over [`MAX_FN_LINES`] lines, from `fn` to its closing brace
//!   (tests aside), unless [`LONG_FUNCTIONS`] says why that one reads better
//!   whole.
//! - Every import between the modules of `ARCHITECTURE.md`'s table is one
//!   its row lists, every listed import is real, and a row lists only rows
//!   above it: the graph is one-way in the order of the table, and the
//!   table is the graph. Inside one row (a folder such as `plugin/`), the
//!   files form no cycle (a folder's `mod.rs` and its own files excepted:
//!   to the outside they are one module).
//!
//! An import is any path into the crate outside `#[cfg(test)]` items:
//! `use crate::…`, `use super::…`, `crate::x::f()` in code and in macro
//! arguments, and `offsite::…` in `main.rs`; re-exports (`pub use`) are
//! followed to the module that defines the item. Each test reports all
//! of its offenders at once; `OFFSITE_ARCH_PRINT=1` prints each row's real
//! imports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;

/// Lines of code a file may have (tests, comments and blank lines aside).
const MAX_CODE_LINES: usize = 800;
/// Lines a function may span, signature to closing brace.
const MAX_FN_LINES: usize = 100;
/// Functions allowed over [`MAX_FN_LINES`]: (`file::function`, why it
/// reads better whole). Empty: every long procedure is split into steps.
const LONG_FUNCTIONS: &[(&str, &str)] = &[];

fn repo() -> PathBuf {
    offsite_tests::paths::project_root()
}

/// One file of `runner/src`, parsed.
struct Source {
    /// Relative to `runner/src`, e.g. `schedule/state_file.rs`.
    file: String,
    /// Module path, e.g. `schedule::state_file`; `main` for the binary.
    module: String,
    text: String,
    ast: syn::File,
}

fn sources() -> Vec<Source> {
    let root = repo().join("runner/src");
    let mut files = vec![];
    collect(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let ast =
                syn::parse_file(&text).unwrap_or_else(|e| panic!("{file}: cannot parse: {e}"));
            Source {
                module: module_of(&file),
                file,
                text,
                ast,
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` → `a::b`, `a/mod.rs` → `a`, `lib.rs` → `` (the crate root).
fn module_of(file: &str) -> String {
    let stem = file.trim_end_matches(".rs");
    match stem {
        "lib" => String::new(),
        "main" => "main".into(),
        _ => stem.trim_end_matches("/mod").replace('/', "::"),
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.meta.to_token_stream().to_string().contains("test"))
}

fn attrs_of(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Line ranges (1-based, inclusive) of `#[cfg(test)]` items, at any depth.
fn test_ranges(items: &[syn::Item], out: &mut Vec<(usize, usize)>) {
    for item in items {
        if is_cfg_test(attrs_of(item)) {
            out.push(lines_of(item.span()));
            continue;
        }
        match item {
            syn::Item::Mod(m) => {
                if let Some((_, inner)) = &m.content {
                    test_ranges(inner, out);
                }
            }
            syn::Item::Impl(i) => {
                for ii in &i.items {
                    if let syn::ImplItem::Fn(f) = ii
                        && is_cfg_test(&f.attrs)
                    {
                        out.push(lines_of(f.span()));
                    }
                }
            }
            _ => {}
        }
    }
}

fn lines_of(span: proc_macro2::Span) -> (usize, usize) {
    (span.start().line, span.end().line)
}

/// Lines of code outside tests: not blank, not only a comment.
fn code_lines(src: &Source) -> usize {
    let mut tests = vec![];
    test_ranges(&src.ast.items, &mut tests);
    src.text
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            let n = i + 1;
            let t = l.trim();
            !t.is_empty()
                && !t.starts_with("//")
                && !tests.iter().any(|&(a, b)| (a..=b).contains(&n))
        })
        .count()
}

/// Every function outside tests: (name, first line, lines spanned).
fn functions(items: &[syn::Item], prefix: &str, out: &mut Vec<(String, usize, usize)>) {
    fn push(
        out: &mut Vec<(String, usize, usize)>,
        name: String,
        sig: &syn::Signature,
        block: &syn::Block,
    ) {
        let start = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().end().line;
        out.push((name, start, end + 1 - start));
    }
    for item in items {
        if is_cfg_test(attrs_of(item)) {
            continue;
        }
        match item {
            syn::Item::Fn(f) => push(out, format!("{prefix}{}", f.sig.ident), &f.sig, &f.block),
            syn::Item::Impl(i) => {
                let ty = i.self_ty.to_token_stream().to_string().replace(' ', "");
                for ii in &i.items {
                    if let syn::ImplItem::Fn(f) = ii
                        && !is_cfg_test(&f.attrs)
                    {
                        push(
                            out,
                            format!("{prefix}{ty}::{}", f.sig.ident),
                            &f.sig,
                            &f.block,
                        );
                    }
                }
            }
            syn::Item::Trait(t) => {
                for ti in &t.items {
                    if let syn::TraitItem::Fn(f) = ti
                        && let Some(block) = &f.default
                    {
                        push(
                            out,
                            format!("{prefix}{}::{}", t.ident, f.sig.ident),
                            &f.sig,
                            block,
                        );
                    }
                }
            }
            syn::Item::Mod(m) => {
                if let Some((_, inner)) = &m.content {
                    functions(inner, &format!("{prefix}{}::", m.ident), out);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn no_file_over_800_lines_of_code() {
    let mut offenders = vec![];
    for src in sources() {
        let n = code_lines(&src);
        if n > MAX_CODE_LINES {
            offenders.push(format!(
                "  runner/src/{}: {n} lines of code (tests, comments and blank lines aside)",
                src.file
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "{} files over {MAX_CODE_LINES} lines of code; split each along its subjects \
         (a folder with one file per subject, see ARCHITECTURE.md):\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

#[test]
fn no_function_over_100_lines() {
    let mut offenders = vec![];
    let mut allowed_seen = BTreeSet::new();
    for src in sources() {
        let mut fns = vec![];
        functions(&src.ast.items, "", &mut fns);
        for (name, line, len) in fns {
            let key = format!("{}::{name}", src.file);
            if len <= MAX_FN_LINES {
                continue;
            }
            if LONG_FUNCTIONS.iter().any(|(k, _)| *k == key) {
                allowed_seen.insert(key);
                continue;
            }
            offenders.push(format!(
                "  runner/src/{}:{line}: {name}: {len} lines",
                src.file
            ));
        }
    }
    for (k, _) in LONG_FUNCTIONS {
        if !allowed_seen.contains(*k) {
            offenders.push(format!(
                "  LONG_FUNCTIONS lists {k}, which is no longer over {MAX_FN_LINES} lines (or gone): remove it"
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "{} functions over {MAX_FN_LINES} lines; make one function per step, reading like \
         the doc comment (or, where one reads better whole, say why in LONG_FUNCTIONS):\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

// ---- the module graph ----

/// One row of ARCHITECTURE.md's table.
struct Row {
    name: String,
    imports: Vec<String>,
}

/// The rows between `<!-- module-graph -->` and `<!-- /module-graph -->`,
/// in order: `` | `name` | what it owns | `a`, `b` (or —) | ``.
fn table() -> Vec<Row> {
    let path = repo().join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).expect("ARCHITECTURE.md at the repository root");
    let start = text
        .find("<!-- module-graph -->")
        .expect("ARCHITECTURE.md has a <!-- module-graph --> table");
    let end = text
        .find("<!-- /module-graph -->")
        .expect("ARCHITECTURE.md closes the table with <!-- /module-graph -->");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    text[start..end]
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
            let name = ticked(cells.first()?).into_iter().next()?;
            Some(Row {
                name,
                imports: ticked(cells.get(2)?),
            })
        })
        .collect()
}

/// A path into the crate, where it was written.
struct Import {
    from: String,
    path: Vec<String>,
    line: usize,
}

/// Paths into the crate written in `src` outside tests, each as absolute
/// module-path segments (without `crate`).
fn imports(src: &Source, modules: &BTreeSet<String>) -> Vec<Import> {
    let mut out = vec![];
    for item in &src.ast.items {
        if is_cfg_test(attrs_of(item)) {
            continue;
        }
        if let syn::Item::Use(u) = item {
            let mut paths = vec![];
            flatten(&u.tree, vec![], &mut paths);
            for (segs, _) in paths {
                if let Some(abs) = absolute(src, &segs, modules, true) {
                    out.push(Import {
                        from: src.module.clone(),
                        path: abs,
                        line: u.span().start().line,
                    });
                }
            }
        } else {
            walk(item.to_token_stream(), src, modules, &mut out);
        }
    }
    out
}

/// `use` tree → (segments, name it is bound to).
fn flatten(tree: &syn::UseTree, prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    match tree {
        syn::UseTree::Path(p) => {
            let mut v = prefix;
            v.push(p.ident.to_string());
            flatten(&p.tree, v, out);
        }
        syn::UseTree::Name(n) if n.ident == "self" => {
            let name = prefix.last().cloned().unwrap_or_default();
            out.push((prefix, name));
        }
        syn::UseTree::Name(n) => {
            let mut v = prefix;
            v.push(n.ident.to_string());
            out.push((v, n.ident.to_string()));
        }
        syn::UseTree::Rename(r) => {
            let mut v = prefix;
            v.push(r.ident.to_string());
            out.push((v, r.rename.to_string()));
        }
        syn::UseTree::Glob(_) => out.push((prefix, "*".into())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten(t, prefix.clone(), out);
            }
        }
    }
}

/// `segs` as written in `src` → absolute segments, or `None` when the path
/// leaves the crate. In a `use`, a first segment naming a child module of
/// `src` is relative to it.
fn absolute(
    src: &Source,
    segs: &[String],
    modules: &BTreeSet<String>,
    in_use: bool,
) -> Option<Vec<String>> {
    let here: Vec<String> = if src.module.is_empty() {
        vec![]
    } else {
        src.module.split("::").map(str::to_string).collect()
    };
    let first = segs.first()?.as_str();
    let mut base = match first {
        "crate" if src.module != "main" => vec![],
        "offsite" if src.module == "main" => vec![],
        "self" => here.clone(),
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        _ if in_use && src.module != "main" => {
            let mut child = here.clone();
            child.push(first.to_string());
            if !modules.contains(&child.join("::")) {
                return None;
            }
            here.clone()
        }
        _ => return None,
    };
    let mut rest = &segs[usize::from(matches!(first, "crate" | "offsite" | "self" | "super"))..];
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// `crate::a::b` (and `super::…`, `offsite::…` in main.rs) in code.
fn walk(tokens: TokenStream, src: &Source, modules: &BTreeSet<String>, out: &mut Vec<Import>) {
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tts.len() {
        if let TokenTree::Group(g) = &tts[i] {
            walk(g.stream(), src, modules, out);
            i += 1;
            continue;
        }
        let TokenTree::Ident(id) = &tts[i] else {
            i += 1;
            continue;
        };
        let root = id.to_string();
        let preceded_by_colons =
            i >= 1 && matches!(&tts[i - 1], TokenTree::Punct(p) if p.as_char() == ':');
        if !matches!(root.as_str(), "crate" | "super" | "offsite") || preceded_by_colons {
            i += 1;
            continue;
        }
        let mut segs = vec![root];
        let mut j = i + 1;
        // `:: ident` after `:: ident`, as far as it goes.
        while let (
            Some(TokenTree::Punct(a)),
            Some(TokenTree::Punct(b)),
            Some(TokenTree::Ident(next)),
        ) = (tts.get(j), tts.get(j + 1), tts.get(j + 2))
            && a.as_char() == ':'
            && b.as_char() == ':'
        {
            segs.push(next.to_string());
            j += 3;
        }
        if segs.len() > 1
            && let Some(abs) = absolute(src, &segs, modules, false)
        {
            out.push(Import {
                from: src.module.clone(),
                path: abs,
                line: id.span().start().line,
            });
        }
        i = j.max(i + 1);
    }
}

/// What each module re-exports (`pub use`): name → absolute path.
fn reexports(
    srcs: &[Source],
    modules: &BTreeSet<String>,
) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for src in srcs {
        for item in &src.ast.items {
            let syn::Item::Use(u) = item else { continue };
            if matches!(u.vis, syn::Visibility::Inherited) || is_cfg_test(&u.attrs) {
                continue;
            }
            let mut paths = vec![];
            flatten(&u.tree, vec![], &mut paths);
            for (segs, name) in paths {
                if let Some(abs) = absolute(src, &segs, modules, true) {
                    out.entry(src.module.clone()).or_default().insert(name, abs);
                }
            }
        }
    }
    out
}

/// The module (file) that defines what `path` names.
fn resolve(
    path: &[String],
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
) -> String {
    let mut path = path.to_vec();
    for _ in 0..8 {
        let n = (0..=path.len())
            .rev()
            .find(|&n| modules.contains(&path[..n].join("::")))
            .unwrap_or(0);
        let module = path[..n].join("::");
        let Some(next) = path.get(n) else {
            return module;
        };
        match reexports.get(&module).and_then(|r| r.get(next)) {
            Some(target) if target != &path[..=n] => {
                let mut p = target.clone();
                p.extend(path[n + 1..].iter().cloned());
                path = p;
            }
            _ => return module,
        }
    }
    path.join("::")
}

/// The table row a module belongs to: the longest row name that is the
/// module or one of its ancestors.
fn row_of<'a>(module: &str, rows: &'a [Row]) -> Option<&'a Row> {
    rows.iter()
        .filter(|r| module == r.name || module.starts_with(&format!("{}::", r.name)))
        .max_by_key(|r| r.name.len())
}

fn is_ancestor(a: &str, b: &str) -> bool {
    a.is_empty() || b.starts_with(&format!("{a}::"))
}

/// Every edge between two modules (files): (from, to) → lines in `from`'s file.
fn edges(srcs: &[Source]) -> BTreeMap<(String, String), Vec<usize>> {
    let modules: BTreeSet<String> = srcs.iter().map(|s| s.module.clone()).collect();
    let re = reexports(srcs, &modules);
    let mut out: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for src in srcs {
        for imp in imports(src, &modules) {
            let to = resolve(&imp.path, &modules, &re);
            if to != imp.from {
                out.entry((imp.from, to)).or_default().push(imp.line);
            }
        }
    }
    out
}

fn file_of(module: &str, srcs: &[Source]) -> String {
    srcs.iter()
        .find(|s| s.module == module)
        .map(|s| format!("runner/src/{}", s.file))
        .unwrap_or_else(|| module.to_string())
}

#[test]
fn module_graph_is_architecture_md() {
    let srcs = sources();
    let rows = table();
    let mut problems = vec![];
    // The table itself: known modules, one-way by order.
    let modules: BTreeSet<String> = srcs.iter().map(|s| s.module.clone()).collect();
    let mut above = BTreeSet::new();
    for r in &rows {
        if !modules.contains(&r.name) {
            problems.push(format!(
                "  ARCHITECTURE.md lists `{}`, which is not a module of runner/src",
                r.name
            ));
        }
        for i in &r.imports {
            if !above.contains(i) {
                problems.push(format!(
                    "  ARCHITECTURE.md: `{}` lists `{i}`, which is not a row above it (imports go up the table only)",
                    r.name
                ));
            }
        }
        above.insert(r.name.clone());
    }
    for s in &srcs {
        if !s.module.is_empty() && row_of(&s.module, &rows).is_none() {
            problems.push(format!(
                "  runner/src/{} (`{}`) has no row in ARCHITECTURE.md's table: add one saying what it owns and imports",
                s.file, s.module
            ));
        }
    }
    // The code against the table, one line per (file, row it imports).
    let all = edges(&srcs);
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    let mut wrong: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for ((from, to), lines) in &all {
        let (Some(fr), Some(tr)) = (row_of(from, &rows), row_of(to, &rows)) else {
            continue;
        };
        if fr.name == tr.name {
            continue;
        }
        used.insert((fr.name.clone(), tr.name.clone()));
        if !fr.imports.contains(&tr.name) {
            wrong
                .entry((from.clone(), tr.name.clone()))
                .or_default()
                .extend(lines);
        }
    }
    let rank = |n: &str| rows.iter().position(|r| r.name == n);
    for ((from, to), lines) in &wrong {
        let row = &row_of(from, &rows).expect("checked above").name;
        let why = if rank(to) >= rank(row) {
            format!("against the flow: `{to}` comes after `{row}` in ARCHITECTURE.md")
        } else {
            format!("not in `{row}`'s imports in ARCHITECTURE.md (add it there if it belongs)")
        };
        problems.push(format!(
            "  {}:{} imports `{to}`: {why}",
            file_of(from, &srcs),
            join_lines(lines)
        ));
    }
    if std::env::var_os("OFFSITE_ARCH_PRINT").is_some() {
        // The imports as they are, row by row, to paste into the table.
        for r in &rows {
            let real: Vec<String> = used
                .iter()
                .filter(|(f, _)| *f == r.name)
                .map(|(_, t)| format!("`{t}`"))
                .collect();
            eprintln!("{}: {}", r.name, real.join(", "));
        }
    }
    for r in &rows {
        for i in &r.imports {
            if !used.contains(&(r.name.clone(), i.clone())) {
                problems.push(format!(
                    "  ARCHITECTURE.md says `{}` imports `{i}`, but it does not: remove `{i}` from its row",
                    r.name
                ));
            }
        }
    }
    // Cycles between the files of one row.
    for cycle in cycles_within_rows(&all, &rows) {
        let mut s = format!("  cycle between {}:", cycle.join(", "));
        for ((from, to), lines) in &all {
            if cycle.contains(from)
                && cycle.contains(to)
                && !is_ancestor(from, to)
                && !is_ancestor(to, from)
            {
                let _ = write!(
                    s,
                    "\n    {}:{} → `{to}`",
                    file_of(from, &srcs),
                    join_lines(lines)
                );
            }
        }
        problems.push(s);
    }
    assert!(
        problems.is_empty(),
        "the module graph of runner/src is not what ARCHITECTURE.md says ({} problems):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn join_lines(lines: &[usize]) -> String {
    let mut l = lines.to_vec();
    l.sort();
    l.dedup();
    l.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Strongly connected sets (more than one file) among the edges that stay
/// inside one row, parent–child edges left out.
fn cycles_within_rows(
    all: &BTreeMap<(String, String), Vec<usize>>,
    rows: &[Row],
) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in all.keys() {
        let same = match (row_of(from, rows), row_of(to, rows)) {
            (Some(a), Some(b)) => a.name == b.name,
            _ => false,
        };
        if same && !is_ancestor(from, to) && !is_ancestor(to, from) {
            graph.entry(from).or_default().push(to);
            graph.entry(to).or_default();
        }
    }
    // Tarjan's algorithm.
    struct T<'a> {
        g: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for &w in &t.g[v] {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = vec![];
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    for &v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}
