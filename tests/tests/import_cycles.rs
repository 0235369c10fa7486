//! No two files of one crate import each other, directly or around a longer loop: each shared
//! item lives in the file that owns it, and the files of a folder form a tree of uses.
//!
//! A file's imports are the `crate::a::b` and `super::a` paths of its code (comments, doc
//! comments and its `#[cfg(test)] mod tests` left out), each taken to the file of the longest
//! module path it names. A parent declaring its children (`mod a;`) is not an import; the crate
//! root's re-exports are not counted either (the root re-exports everything).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`["guard", "breaker"]`), the crate root being empty.
type Module = Vec<String>;

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: tests/ sits in the workspace root")
}

/// Every `.rs` file under `src`, by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable source folder") {
            let path = entry.expect("a readable entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut module: Module = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            found.insert(module, path);
        }
    }
    found
}

/// The code of a file: comments and the `#[cfg(test)] mod tests` block removed.
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths named after `prefix` (`crate::` or `super::`) in `code`, with `use
/// crate::{a, b::c}` lists opened.
fn paths_after(code: &str, prefix: &str) -> Vec<Module> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| ident(c) || c == ':') {
            continue;
        }
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            for item in list[..end].split(',') {
                out.push(segments(item.trim()));
            }
            continue;
        }
        let end = rest
            .find(|c: char| !(ident(c) || c == ':'))
            .unwrap_or(rest.len());
        out.push(segments(&rest[..end]));
    }
    out
}

fn segments(path: &str) -> Module {
    path.split("::")
        .take_while(|s| !s.is_empty() && s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .map(str::to_owned)
        .collect()
}

/// Which files each file imports.
fn imports(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let files = modules(src);
    let mut edges = BTreeMap::new();
    for (module, path) in &files {
        let text = code(&std::fs::read_to_string(path).expect("a readable source file"));
        // `super::` from a `mod.rs` names a sibling of the folder, from a plain file a sibling
        // of the file: the parent module either way.
        let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
        let mut named = paths_after(&text, "crate::");
        for path in paths_after(&text, "super::") {
            named.push(parent.iter().cloned().chain(path).collect());
        }
        let mut targets = BTreeSet::new();
        for path in named {
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|prefix| files.contains_key(prefix));
            if let Some(target) = target {
                if &target != module && !target.is_empty() {
                    targets.insert(target);
                }
            }
        }
        if !module.is_empty() {
            edges.insert(module.clone(), targets);
        }
    }
    edges
}

/// The groups of files that reach each other (strongly connected, more than one file).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    let reaches = |from: &Module| -> BTreeSet<Module> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(at) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&Module, BTreeSet<Module>> =
        edges.keys().map(|m| (m, reaches(m))).collect();
    let mut groups: Vec<Vec<Module>> = Vec::new();
    for (module, reached) in &reach {
        if !reached.contains(*module) || groups.iter().any(|g| g.contains(module)) {
            continue;
        }
        let group: Vec<Module> = reach
            .iter()
            .filter(|(other, back)| reached.contains(**other) && back.contains(*module))
            .map(|(other, _)| (*other).clone())
            .collect();
        groups.push(group);
    }
    groups
}

#[test]
fn no_two_files_of_a_crate_import_each_other() {
    let root = workspace_root();
    let mut found = Vec::new();
    for member in [
        "core",
        "transport",
        "backend-tokio",
        "backend-async-std",
        "fleet",
        "vendors",
        "entropy",
        "tests",
        "bench",
        "fuzz",
    ] {
        let src = root.join(member).join("src");
        if !src.is_dir() {
            continue;
        }
        for group in cycles(&imports(&src)) {
            let names: Vec<String> = group.iter().map(|m| m.join("::")).collect();
            found.push(format!("{member}: {}", names.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_a_cycle_through_a_use_list_and_one_through_super() {
    let dir = std::env::temp_dir().join(format!("egress-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("guard")).unwrap();
    std::fs::write(
        dir.join("lib.rs"),
        "mod a;\nmod b;\nmod guard;\npub use a::A;\n",
    )
    .unwrap();
    std::fs::write(dir.join("a.rs"), "use crate::{b::B, c};\npub struct A;\n").unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "// use crate::nothing;\npub struct B(crate::a::A);\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("guard/mod.rs"),
        "mod x;\nuse crate::guard::x::X;\n",
    )
    .unwrap();
    std::fs::write(dir.join("guard/x.rs"), "pub struct X(super::Y);\n").unwrap();
    std::fs::write(
        dir.join("c.rs"),
        "/// crate::a::A in a doc only\npub struct C;\n",
    )
    .unwrap();
    let mut groups: Vec<Vec<String>> = cycles(&imports(&dir))
        .into_iter()
        .map(|g| g.iter().map(|m| m.join("::")).collect())
        .collect();
    groups.sort();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        groups,
        [vec!["a", "b"], vec!["guard", "guard::x"]],
        "a <-> b through a use list, guard <-> guard::x through super; c (a doc) is no import"
    );
}
