//! The top-level modules of `src/` use each other in one direction only.
//!
//! Reads the Rust sources (no compiler involved): a module `a` (the files
//! `src/a.rs` and `src/a/**`) uses a module `b` when a line of its code, not
//! a comment, names `crate::b` (a `use crate::b::…` line, a `crate::b::x`
//! path, or `b` inside `use crate::{…}`). Doc links are comments: they do
//! not count. Test modules inside a file count like the rest of it.
//!
//! The rules:
//! - `cli` and `python` are the outer layer: they may use anything, and no
//!   other module may use them (`python` runs the command line, so it uses `cli`);
//! - `error` is a leaf: it uses no other module;
//! - the other modules form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The outer layer: may use any module, used by none but each other.
const OUTER: &[&str] = &["cli", "python"];

/// Modules that use no other module.
const LEAVES: &[&str] = &["error"];

/// Edges that would close a cycle today and are accepted until they are
/// removed (`from`, `to`, why). Keep it short.
const ALLOWED: &[(&str, &str, &str)] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Top-level module of a file under `src/`: `src/a.rs` and `src/a/x.rs` are
/// `a`; `lib.rs` and `bin/` are not modules.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "bin" && (first.ends_with(".rs") || rel.components().count() > 1))
        .then(|| name.to_string())
}

/// The code of a line, without a `//` comment (a line comment or a doc comment).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The modules named after `crate::` in `code` (a whole file, comments removed).
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `uota::crate::` cannot occur; skip `$crate::` of macros.
        if code[..at].ends_with('$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::x, b, c::{y, z}}`: the names at depth 0.
            let mut depth = 0usize;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        out.insert(ident_at(&group[i..]).to_string());
                        start = false;
                    }
                    _ => start = false,
                }
            }
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
    out
}

fn graph_of(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(f.strip_prefix(src).unwrap()))
        .collect();
    for file in &files {
        let Some(module) = module_of(file.strip_prefix(src).unwrap()) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let code: String = text.lines().map(code_of).collect::<Vec<_>>().join("\n");
        let uses = graph.entry(module.clone()).or_default();
        for used in used_modules(&code) {
            if used != module && modules.contains(&used) {
                uses.insert(used);
            }
        }
    }
    graph
}

/// One cycle of `graph`, as the path `a -> b -> … -> a`, if it has one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    // Depth-first search; `path` is the current chain of modules.
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn print_graph(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, uses)| {
            let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
            format!("  {m} -> {}\n", uses.join(", "))
        })
        .collect()
}

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = graph_of(&src);
    assert!(graph.len() > 10, "modules found: {graph:?}");
    let shown = print_graph(&graph);

    for (module, uses) in &graph {
        if !OUTER.contains(&module.as_str()) {
            let outer: Vec<&String> = uses
                .iter()
                .filter(|u| OUTER.contains(&u.as_str()))
                .collect();
            assert!(
                outer.is_empty(),
                "{module} uses the outer layer {outer:?}; only cli and python may\n{shown}"
            );
        }
        if LEAVES.contains(&module.as_str()) {
            assert!(
                uses.is_empty(),
                "{module} is a leaf but uses {uses:?}\n{shown}"
            );
        }
    }
    for (from, to, _why) in ALLOWED {
        let removed = graph.get_mut(*from).is_some_and(|uses| uses.remove(*to));
        assert!(
            removed,
            "the allowed edge {from} -> {to} is gone: take it off ALLOWED\n{shown}"
        );
    }
    // The outer layer is checked above; cycles are looked for below it.
    graph.retain(|m, _| !OUTER.contains(&m.as_str()));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "cycle between top-level modules: {}\nmodule uses (comments left out):\n{shown}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn reads_use_lines_and_paths() {
    let code = "use crate::a::X;\nuse crate::{b::Y, c, d::{e, f}};\nlet x = crate::g::h();\nmacro_rules! m { () => { $crate::z } }";
    let used: Vec<String> = used_modules(code).into_iter().collect();
    assert_eq!(used, ["a", "b", "c", "d", "g"]);
    assert_eq!(code_of("let a = 1; // crate::x"), "let a = 1; ");
    assert_eq!(code_of("/// [`crate::x`]"), "");
    let mut graph = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&graph), None);
}
