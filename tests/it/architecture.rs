//! The shape of the code, checked: no module imports a sibling that
//! imports it back (at any depth), and `unsafe` appears in usan-core's
//! `kernels` only.
//!
//! Modules are read from the source files: a file's module path is its path
//! under `src/`; every `crate::…`, `super::…` and `self::…` path in its code
//! (comments left out) is a reference to the deepest module it names. A
//! reference between two modules is an edge between their ancestors that
//! are siblings (children of the same module); references between a module
//! and its own ancestors are the module tree itself and not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, with its module path (`["cli", "eval", "tep"]`).
fn modules(dir: &Path) -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                walk(&path, &[prefix, &[name]].concat(), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "lib" | "main" | "mod" => prefix.to_vec(),
                    _ => [prefix, &[name]].concat(),
                };
                out.insert(module, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &[], &mut out);
    out
}

/// The code without comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every path starting at `crate::`, `super::` or `self::`, brace groups
/// expanded (`crate::{a, b::{c, d}}` gives `crate::a`, `crate::b::c`, `crate::b::d`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for (start, _) in code.match_indices("::") {
        // Back up to the start of the first segment.
        let mut head = start;
        while head > 0 && (bytes[head - 1].is_ascii_alphanumeric() || bytes[head - 1] == b'_') {
            head -= 1;
        }
        let first = &code[head..start];
        let before = if head > 0 { bytes[head - 1] } else { b' ' };
        if !matches!(first, "crate" | "super" | "self") || before == b':' {
            continue;
        }
        let mut rest = &code[start..];
        let mut prefix = vec![first.to_string()];
        expand(&mut rest, &mut prefix, &mut found);
    }
    found
}

/// Reads `::seg::seg…` or `::{…}` from `rest`, pushing each full path.
fn expand(rest: &mut &str, prefix: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    let depth = prefix.len();
    while let Some(after) = rest.strip_prefix("::") {
        let after = after.trim_start();
        if let Some(inner) = after.strip_prefix('{') {
            let mut level = 1;
            let end = inner
                .char_indices()
                .find(|(_, c)| {
                    level += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    level == 0
                })
                .map_or(inner.len(), |(i, _)| i);
            let group = &inner[..end];
            let mut item_level = 0;
            let mut item_start = 0;
            let mut items = Vec::new();
            for (i, c) in group.char_indices() {
                match c {
                    '{' => item_level += 1,
                    '}' => item_level -= 1,
                    ',' if item_level == 0 => {
                        items.push(&group[item_start..i]);
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            items.push(&group[item_start..]);
            for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
                if item == "self" {
                    found.push(prefix.clone());
                    continue;
                }
                let text = format!("::{item}");
                let mut item_rest: &str = &text;
                let mut nested = prefix.clone();
                expand(&mut item_rest, &mut nested, found);
            }
            *rest = &inner[(end + 1).min(inner.len())..];
            prefix.truncate(depth);
            return;
        }
        let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        if len == 0 {
            break;
        }
        prefix.push(after[..len].to_string());
        *rest = &after[len..];
    }
    found.push(prefix.clone());
    prefix.truncate(depth);
}

/// The module a path from `from` names: the deepest known module along it.
fn target(from: &[String], path: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut module: Vec<String> = Vec::new();
    let mut segments = path.iter().peekable();
    match segments.next().map(String::as_str) {
        Some("crate") => {}
        Some("self") => module = from.to_vec(),
        Some("super") => {
            module = from[..from.len().checked_sub(1)?].to_vec();
            while segments.peek().is_some_and(|s| *s == "super") {
                segments.next();
                module.pop();
            }
        }
        _ => return None,
    }
    for segment in segments {
        let mut next = module.clone();
        next.push(segment.clone());
        if known.contains(&next) {
            module = next;
        } else {
            break;
        }
    }
    Some(module)
}

/// Sibling edges `(parent, from child, to child)` of one crate's module tree.
fn sibling_edges(src: &Path) -> BTreeSet<(Vec<String>, String, String)> {
    let modules = modules(src);
    let known: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
    let mut edges = BTreeSet::new();
    for (from, text) in &modules {
        for path in paths(&code(text)) {
            let Some(to) = target(from, &path, &known) else { continue };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // a module and its ancestor or descendant
            }
            edges.insert((from[..common].to_vec(), from[common].clone(), to[common].clone()));
        }
    }
    edges
}

/// A cycle among the sibling edges, if any, as the modules along it.
fn cycle(edges: &BTreeSet<(Vec<String>, String, String)>) -> Option<Vec<String>> {
    let mut graph: BTreeMap<(Vec<String>, String), Vec<String>> = BTreeMap::new();
    for (parent, from, to) in edges {
        graph.entry((parent.clone(), from.clone())).or_default().push(to.clone());
    }
    fn visit(
        node: &(Vec<String>, String),
        graph: &BTreeMap<(Vec<String>, String), Vec<String>>,
        state: &mut BTreeMap<(Vec<String>, String), u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|m| *m == node.1).unwrap_or(0);
                let mut found = stack[at..].to_vec();
                found.push(node.1.clone());
                let parent = if node.0.is_empty() { "crate".to_string() } else { node.0.join("::") };
                return Some(found.into_iter().map(|m| format!("{parent}::{m}")).collect());
            }
            _ => {}
        }
        state.insert(node.clone(), 1);
        stack.push(node.1.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(&(node.0.clone(), next.clone()), graph, state, stack) {
                return Some(found);
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if let Some(found) = visit(node, &graph, &mut state, &mut Vec::new()) {
            return Some(found);
        }
    }
    None
}

#[test]
fn the_checker_finds_a_planted_cycle_and_resolves_paths() {
    let known: BTreeSet<Vec<String>> =
        [vec![], vec!["a".into()], vec!["a".into(), "x".into()], vec!["b".into()]].into_iter().collect();
    let found = paths("use crate::{a::{x::Item, y}, b};\nfn f() { super::super::b::g(); }");
    let targets: Vec<Vec<String>> = found.iter().filter_map(|p| target(&["a".into(), "x".into()], p, &known)).collect();
    assert!(targets.contains(&vec!["a".into(), "x".into()]), "{found:?} → {targets:?}");
    assert!(targets.contains(&vec!["b".into()]), "{found:?} → {targets:?}");
    let edges: BTreeSet<(Vec<String>, String, String)> =
        [(vec![], "a".into(), "b".into()), (vec![], "b".into(), "a".into())].into_iter().collect();
    assert!(cycle(&edges).is_some());
}

#[test]
fn no_module_imports_a_sibling_that_imports_it_back() {
    for src in ["src", "crates/core/src", "crates/onnx/src"] {
        let edges = sibling_edges(&repo().join(src));
        assert!(!edges.is_empty(), "{src}: no references found: the checker is broken");
        if let Some(found) = cycle(&edges) {
            panic!("{src}: import cycle {}", found.join(" → "));
        }
    }
}

#[test]
fn unsafe_code_lives_in_the_core_kernels_only() {
    for src in ["src", "crates/core/src", "crates/onnx/src"] {
        for (module, text) in modules(&repo().join(src)) {
            let in_kernels = src == "crates/core/src" && module.first().is_some_and(|m| m == "kernels");
            if !in_kernels {
                let code = code(&text);
                assert!(
                    !code.contains("unsafe {") && !code.contains("unsafe fn") && !code.contains("unsafe impl"),
                    "{src}/{} uses unsafe outside usan-core's kernels",
                    module.join("/")
                );
            }
        }
    }
}
