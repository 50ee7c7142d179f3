//! The source layout's one rule: data flows forward only, so no file of `src/` imports, through `crate::` or
//! `super::` paths, a file that imports it back (directly or through others). A module's `mod.rs` re-exporting its
//! children (`pub use self::…`) is its facade, not an import. Unit-test modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The file's code without comments and without its unit-test module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .map(|line| line.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file names: `crate::a::b::Item`, `super::c::Item` and, in a group
/// (`crate::a::{b::Item, c}`), each member joined to the group's prefix.
fn named_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    for (root, start) in ["crate::", "super::"]
        .iter()
        .flat_map(|root| code.match_indices(root).map(move |(i, _)| (*root, i)))
    {
        if start > 0 && code[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[start + root.len()..];
        let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
        let mut base: Vec<String> = match root {
            "crate::" => Vec::new(),
            // `super` of `a/b.rs` (module a::b) and of `a/b/mod.rs` (module a::b) is `a`.
            _ => module[..module.len().saturating_sub(1)].to_vec(),
        };
        base.extend(
            rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        found.push(base.clone());
        if rest[end..].starts_with('{') {
            let close = rest[end..].find('}').map_or(rest.len(), |i| end + i);
            for member in rest[end + 1..close].split(',') {
                let member = member.split(" as ").next().unwrap().trim();
                if member.is_empty() || member == "self" {
                    continue;
                }
                let mut path = base.clone();
                path.extend(member.split("::").map(|s| s.trim().to_owned()));
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn no_source_file_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    // The file a path lands in: the longest prefix of it that is a module.
    let resolve = |path: &[String]| {
        (1..=path.len())
            .rev()
            .find_map(|n| modules.get(&path[..n]).cloned())
    };
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        if file.to_string_lossy().ends_with("tests.rs") {
            continue;
        }
        let module = module_of(&src, file);
        let text = code(&std::fs::read_to_string(file).unwrap());
        let targets = edges.entry(file.clone()).or_default();
        for path in named_paths(&text, &module) {
            if let Some(target) = resolve(&path).filter(|t| t != file) {
                targets.insert(target);
            }
        }
    }
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 100,
        "the import scan found almost nothing: {edges:?}"
    );
    // Depth-first search for a back edge; the cycle is reported as the chain of files.
    let mut state: BTreeMap<&PathBuf, bool> = BTreeMap::new(); // false: on the stack, true: done
    let mut stack: Vec<&PathBuf> = Vec::new();
    fn visit<'a>(
        file: &'a PathBuf,
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<&'a PathBuf, bool>,
        stack: &mut Vec<&'a PathBuf>,
    ) -> Option<Vec<&'a PathBuf>> {
        state.insert(file, false);
        stack.push(file);
        for next in edges.get(file).into_iter().flatten() {
            match state.get(next) {
                Some(false) => {
                    let from = stack.iter().position(|f| *f == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Some(true) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(file, true);
        None
    }
    for file in edges.keys() {
        if !state.contains_key(file) {
            if let Some(cycle) = visit(file, &edges, &mut state, &mut stack) {
                let chain: Vec<String> = cycle
                    .iter()
                    .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
                    .collect();
                panic!("import circle: {}", chain.join(" → "));
            }
        }
    }
}
