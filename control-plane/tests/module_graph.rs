//! The control plane's modules form no cycle: no module imports one that imports it back,
//! directly or through others.
//!
//! A module is a file under `src/` (`a/b.rs` and `a/b/mod.rs` are `crate::a::b`). An edge
//! `m -> n` is any path in `m`'s code (not its comments) that names an item of `n`:
//! `crate::…`, `super::…` or `self::…`, including `use` groups. A `mod n;` declaration is not an
//! edge; a parent re-exporting or calling into its child is. Unit-test modules inline in a file
//! count as part of that file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::a::b` for `src/a/b.rs` or `src/a/b/mod.rs`; `crate` for `src/lib.rs`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    std::iter::once("crate".to_string())
        .chain(parts)
        .collect::<Vec<_>>()
        .join("::")
}

/// The code of a line without its `//` comment (a `//` inside a string literal is kept).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `at` in `code` (`crate::x::y`, `x::{a, b::c}` …), each as its
/// segments, with `{…}` groups expanded one level at a time.
fn paths_at(code: &str, at: usize) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    let mut rest = &code[at..];
    loop {
        let n = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if n == 0 {
            break;
        }
        segs.push(rest[..n].to_string());
        rest = &rest[n..];
        if let Some(r) = rest.strip_prefix("::") {
            rest = r.trim_start();
            if let Some(group) = rest.strip_prefix('{') {
                // Split the group at top-level commas.
                let mut depth = 0;
                let mut start = 0;
                let mut out = Vec::new();
                let body = group;
                for (i, c) in body.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            out.push(&body[start..i]);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.push(&body[start..i]);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                let mut all = Vec::new();
                for item in out {
                    let item = item.trim();
                    if item.is_empty() {
                        continue;
                    }
                    for tail in paths_at(item, 0) {
                        let mut p = segs.clone();
                        p.extend(tail);
                        all.push(p);
                    }
                }
                return all;
            }
        } else {
            break;
        }
    }
    vec![segs]
}

/// The modules `code` (of module `me`) refers to, as written (not yet resolved to files).
fn references(me: &str, code: &str) -> Vec<Vec<String>> {
    let me: Vec<&str> = me.split("::").collect();
    let mut out = Vec::new();
    // Inline modules (`mod tests { … }`) sit below the file's module: `super` there is the file.
    let mut inline_depth = 0usize;
    for raw in code.lines() {
        let line = strip_comment(raw);
        let t = line.trim_start();
        let t = t
            .strip_prefix("pub(crate) ")
            .or(t.strip_prefix("pub "))
            .unwrap_or(t);
        if t.starts_with("mod ") && t.trim_end().ends_with('{') {
            inline_depth += 1;
        }
        for (i, _) in line
            .match_indices("crate::")
            .chain(line.match_indices("super::"))
            .chain(line.match_indices("self::"))
        {
            if i > 0 && line[..i].ends_with(|c: char| is_ident(c) || c == ':') {
                continue;
            }
            for p in paths_at(line, i) {
                let mut base: Vec<String> = me.iter().map(|s| s.to_string()).collect();
                let mut segs = p.into_iter().peekable();
                match segs.peek().map(String::as_str) {
                    Some("crate") => {
                        base = vec!["crate".into()];
                        segs.next();
                    }
                    Some("self") => {
                        segs.next();
                    }
                    Some("super") => {
                        let mut depth = inline_depth;
                        while segs.peek().map(String::as_str) == Some("super") {
                            segs.next();
                            if depth > 0 {
                                depth -= 1;
                            } else {
                                base.pop();
                            }
                        }
                    }
                    _ => continue,
                }
                base.extend(segs);
                out.push(base);
            }
        }
    }
    out
}

/// Module → modules it refers to, for every `.rs` file under `src` (except `main.rs`).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let modules: BTreeMap<String, String> = files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "main.rs"))
        .map(|p| {
            let rel = p.strip_prefix(src).expect("under src");
            (
                module_of(rel),
                std::fs::read_to_string(p).expect("read source"),
            )
        })
        .collect();
    let mut g = BTreeMap::new();
    for (m, code) in &modules {
        let mut to = BTreeSet::new();
        for path in references(m, code) {
            // The longest prefix of the path that is a module (a file).
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|cand| modules.contains_key(cand));
            if let Some(t) = target {
                if &t != m {
                    to.insert(t);
                }
            }
        }
        g.insert(m.clone(), to);
    }
    g
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        on: BTreeSet<&'a str>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_module_of_the_control_plane_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    assert!(
        g.len() > 20,
        "found only {} modules under {}",
        g.len(),
        src.display()
    );
    let found = cycles(&g);
    let explain: Vec<String> = found
        .iter()
        .map(|scc| {
            let edges: Vec<String> = scc
                .iter()
                .flat_map(|m| {
                    g[m].iter()
                        .filter(|n| scc.contains(n))
                        .map(move |n| format!("{m} -> {n}"))
                })
                .collect();
            edges.join(", ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "module cycles in control-plane/src:\n  {}",
        explain.join("\n  ")
    );
}

/// The checker finds what it is meant to find: a two-module cycle through a `use` group, a
/// cycle through `super`, and no edge from a comment or from a test module's `super::*`.
#[test]
fn the_checker_sees_cycles_and_ignores_comments() {
    let dir = std::env::temp_dir().join(format!("estuary-module-graph-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("ra")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod ra;\n").expect("write");
    std::fs::write(
        src.join("a.rs"),
        "use crate::{b::Thing, ra::x};\n// crate::ra::y is only a comment\n",
    )
    .expect("write");
    std::fs::write(
        src.join("b.rs"),
        "pub struct Thing;\nfn f() -> crate::a::A { todo!() }\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    )
    .expect("write");
    std::fs::write(src.join("ra/mod.rs"), "pub mod x;\npub mod y;\n").expect("write");
    std::fs::write(src.join("ra/x.rs"), "use super::y::Y;\n").expect("write");
    std::fs::write(src.join("ra/y.rs"), "pub struct Y;\n").expect("write");
    let g = graph(&src);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        g["crate::a"],
        ["crate::b", "crate::ra::x"].map(String::from).into()
    );
    assert_eq!(g["crate::ra::x"], ["crate::ra::y"].map(String::from).into());
    assert!(g["crate::b"].contains("crate::a"));
    assert_eq!(
        cycles(&g),
        vec![vec!["crate::a".to_string(), "crate::b".to_string()]]
    );
}

/// The layers of the README's architecture section: configuration and shared infrastructure
/// know no feature; the RA core knows no front end.
#[test]
fn lower_layers_do_not_reach_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    let under = |m: &str, folder: &str| m == folder || m.starts_with(&format!("{folder}::"));
    let rules: [(&str, &[&str]); 3] = [
        (
            "crate::support",
            &[
                "crate::config",
                "crate::ra",
                "crate::est",
                "crate::brski",
                "crate::teap",
                "crate::http",
                "crate::metrics",
            ],
        ),
        (
            "crate::config",
            &[
                "crate::ra",
                "crate::est",
                "crate::brski",
                "crate::teap",
                "crate::http",
            ],
        ),
        (
            "crate::ra",
            &["crate::est", "crate::brski", "crate::teap", "crate::http"],
        ),
    ];
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        for (layer, above) in rules {
            if !under(m, layer) {
                continue;
            }
            for d in deps {
                if above.iter().any(|a| under(d, a)) {
                    wrong.push(format!("{m} -> {d}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a lower layer reaches up:\n  {}",
        wrong.join("\n  ")
    );
}
