//! The documentation's relative links resolve: every `[text](path)` and
//! `[text](path#anchor)` in README.md, ARCHITECTURE.md, CHANGELOG.md, docs/
//! and deploy/**/README.md names a file or directory that exists, and an
//! anchor names a heading of the page it points to (GitHub's slugs). Links
//! to the web are not followed: the tests need no internet.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The Markdown pages checked, relative to the crate root.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "CHANGELOG.md"]
        .iter()
        .map(|p| root.join(p))
        .filter(|p| p.is_file())
        .collect();
    for dir in ["docs", "deploy"] {
        walk(&root.join(dir), &mut out);
    }
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// The page's lines outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The targets of the page's inline links, outside code blocks and spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        // Drop inline code spans: `[a](b)` inside backticks is not a link.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            let target = tail[..end].split_whitespace().next().unwrap_or("");
            out.push(target.to_string());
            rest = &tail[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped but `-`
/// and `_`, spaces to `-`; a repeated slug gets `-1`, `-2`, ….
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose(text) {
        if !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 1;
        while seen.contains(&unique) {
            unique = format!("{slug}-{n}");
            n += 1;
        }
        seen.insert(unique);
    }
    seen
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages(root) {
        let text = std::fs::read_to_string(&page).expect("a readable page");
        let dir = page.parent().expect("a page has a directory");
        for target in links(&text) {
            if target.is_empty()
                || target.contains("://")
                || target.starts_with("mailto:")
                || target.starts_with('<')
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            let name = page
                .strip_prefix(root)
                .unwrap_or(&page)
                .display()
                .to_string();
            if !file.exists() {
                broken.push(format!("{name}: {target}: no such file"));
                continue;
            }
            if !anchor.is_empty() {
                let Ok(linked) = std::fs::read_to_string(&file) else {
                    broken.push(format!("{name}: {target}: an anchor into a non-page"));
                    continue;
                };
                if !anchors(&linked).contains(anchor) {
                    broken.push(format!("{name}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} links found: is the parser right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_finds_what_is_broken() {
    let page = "# Top\n## Rate limiting\n## `--state` runs\n## Top\n\
                [a](#rate-limiting) [b](#nope) `[c](#code)` [d](x.md#y)\n\
                ```\n[e](#fenced)\n```\n";
    assert_eq!(
        links(page),
        ["#rate-limiting", "#nope", "x.md#y"].map(String::from)
    );
    let a = anchors(page);
    for slug in ["top", "rate-limiting", "--state-runs", "top-1"] {
        assert!(a.contains(slug), "{slug} in {a:?}");
    }
    assert!(!a.contains("nope"));
}
