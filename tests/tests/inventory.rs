//! The docs against the repository: `docs/develop.md`'s "End-to-end checks"
//! lists exactly the checks of `tests/tests/e2e/main.rs`, in their order, and
//! every relative link and image in `README.md` and `docs/*.md` points at a
//! file that exists. Plain file reads: no cluster, no Docker.

use std::path::{Path, PathBuf};

/// The heading of the inventory in `docs/develop.md`.
const INVENTORY_HEADING: &str = "## End-to-end checks";

/// The repository's root: the parent of this crate (`tests/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits in the repository").into()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `module::check`: one module, one function, lower-case Rust names.
fn is_check_name(name: &str) -> bool {
    let ident = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    match name.split_once("::") {
        Some((module, check)) => ident(module) && ident(check),
        None => false,
    }
}

/// The check names of the `trials` vector of `main.rs`, in order: the
/// argument of each `plain!(...)` and `on_cluster!(...)`. Anything else in
/// the vector but comments, commas and white space is an error, so a new
/// way of listing a check cannot be skipped silently.
fn checks_in_main(source: &str) -> Result<Vec<String>, String> {
    const START: &str = "let trials = vec![";
    let start = source.find(START).ok_or(format!("no `{START}` in main.rs"))? + START.len();
    let body = &source[start..];
    let body = &body[..body.find("];").ok_or("the `trials` vector is not closed with `];`")?];
    let mut names = vec![];
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            break;
        }
        if rest.starts_with("//") {
            rest = rest.split_once('\n').map_or("", |(_, after)| after);
            continue;
        }
        let after = ["plain!(", "on_cluster!("]
            .iter()
            .find_map(|m| rest.strip_prefix(m))
            .ok_or_else(|| format!("`trials` holds something other than plain!/on_cluster!: {rest:.80}"))?;
        let (name, after) = after.split_once(')').ok_or("an unclosed macro call in `trials`")?;
        let name = name.trim();
        if !is_check_name(name) {
            return Err(format!("`trials` names {name:?}, which is not `module::check`"));
        }
        names.push(name.to_owned());
        rest = after;
    }
    if names.is_empty() {
        return Err("no plain!/on_cluster! check in `trials`".into());
    }
    Ok(names)
}

/// The check names of the inventory: the backticked name that starts each
/// bullet of its section, in order. A bullet that does not start with one
/// is an error.
fn checks_in_docs(doc: &str) -> Result<Vec<String>, String> {
    let mut lines = doc.lines();
    if !lines.any(|l| l.trim_end() == INVENTORY_HEADING) {
        return Err(format!("no `{INVENTORY_HEADING}` heading"));
    }
    let mut names = vec![];
    let mut fenced = false;
    for line in lines {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if line.starts_with("# ") || line.starts_with("## ") {
            break;
        }
        let Some(bullet) = ["- ", "* ", "+ "].iter().find_map(|b| line.strip_prefix(b)) else {
            continue;
        };
        let name = bullet
            .strip_prefix('`')
            .and_then(|b| b.split_once('`'))
            .map(|(name, _)| name)
            .filter(|name| is_check_name(name))
            .ok_or_else(|| format!("a bullet that does not start with a `module::check` name: {line}"))?;
        names.push(name.to_owned());
    }
    if names.is_empty() {
        return Err(format!("no bullet under `{INVENTORY_HEADING}`"));
    }
    Ok(names)
}

#[test]
fn the_end_to_end_inventory_lists_every_check_in_order() {
    let root = repo();
    let main = checks_in_main(&read(&root.join("tests/tests/e2e/main.rs")))
        .unwrap_or_else(|e| panic!("tests/tests/e2e/main.rs: {e}"));
    let docs = checks_in_docs(&read(&root.join("docs/develop.md")))
        .unwrap_or_else(|e| panic!("docs/develop.md: {e}"));
    if main == docs {
        return;
    }
    let missing: Vec<&String> = main.iter().filter(|c| !docs.contains(c)).collect();
    let unknown: Vec<&String> = docs.iter().filter(|c| !main.contains(c)).collect();
    let mut problems = vec![];
    if !missing.is_empty() {
        problems.push(format!("missing from the docs: {missing:?}"));
    }
    if !unknown.is_empty() {
        problems.push(format!("listed in the docs but not a check in main.rs: {unknown:?}"));
    }
    if missing.is_empty() && unknown.is_empty() {
        let at = main.iter().zip(&docs).position(|(m, d)| m != d).unwrap_or(main.len().min(docs.len()));
        problems.push(format!(
            "not in run order (or listed twice): check {} is {} in main.rs but {} in the docs",
            at + 1,
            main.get(at).map_or("nothing", String::as_str),
            docs.get(at).map_or("nothing", String::as_str)
        ));
    }
    panic!(
        "docs/develop.md's End-to-end checks ({} bullets) and the `trials` of tests/tests/e2e/main.rs ({} checks) differ: {}; update docs/develop.md's End-to-end checks",
        docs.len(),
        main.len(),
        problems.join("; ")
    );
}

/// The Markdown files whose links are checked: the README and `docs/*.md`.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let docs = root.join("docs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", docs.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no Markdown file in {}", docs.display());
    files.insert(0, root.join("README.md"));
    files
}

/// `text` without its inline code spans (`...`), where `](` is no link.
fn without_code_spans(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        out.push_str(&rest[..open]);
        let ticks = rest[open..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[open..open + ticks];
        let after = &rest[open + ticks..];
        match after.find(fence) {
            Some(close) => rest = &after[close + ticks..],
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of a Markdown file's links and images (`[text](target)`,
/// `![alt](target)`, `[label]: target`), outside fenced code and code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let prose = without_code_spans(&prose);
    let mut targets = vec![];
    for (at, _) in prose.match_indices("](") {
        let after = &prose[at + 2..];
        if let Some(end) = after.find(')') {
            targets.push(after[..end].to_owned());
        }
    }
    for line in prose.lines() {
        let line = line.trim_start();
        if let Some((label, target)) = line.strip_prefix('[').and_then(|l| l.split_once("]: "))
            && !label.contains(']')
        {
            targets.push(target.to_owned());
        }
    }
    targets
        .into_iter()
        .map(|t| {
            let t = t.trim();
            // `<path>` and `path "title"`: the path alone.
            let t = t.strip_prefix('<').and_then(|t| t.split_once('>')).map_or(t, |(t, _)| t);
            t.split_whitespace().next().unwrap_or("").to_owned()
        })
        .collect()
}

#[test]
fn every_relative_link_in_the_docs_points_at_a_file() {
    let root = repo();
    let mut checked = 0;
    let mut broken = vec![];
    for file in markdown_files(&root) {
        let dir = file.parent().expect("a file has a folder");
        let name = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
        for target in link_targets(&read(&file)) {
            let external = ["http://", "https://", "mailto:"].iter().any(|s| target.starts_with(s));
            if external || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() {
                broken.push(format!("{name}: an empty link target {target:?}"));
                continue;
            }
            let resolved = match path.strip_prefix('/') {
                Some(from_root) => root.join(from_root),
                None => dir.join(path),
            };
            checked += 1;
            if !resolved.exists() {
                broken.push(format!("{name}: ({target}) is {}, which does not exist", resolved.display()));
            }
        }
    }
    assert!(checked > 0, "no relative link found in README.md or docs/*.md: is the link parser broken?");
    assert!(
        broken.is_empty(),
        "links to files that do not exist (paths are relative to the file that holds the link):\n{}",
        broken.join("\n")
    );
}
