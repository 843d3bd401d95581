//! Holds the code to the floors of DESIGN.md: a module may name only
//! modules on its floor or below, and no two modules may name each other
//! through any chain. The table below is the one place the layering is
//! written; README's "Architecture" section shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Floors, lowest first. `main.rs` (floor 5) names the crate as a library.
const FLOORS: &[(u8, &[&str])] = &[
    (1, &["sip", "media", "store", "recv_batch", "clock"]),
    (2, &["config", "auth", "cdr", "events", "contacts"]),
    (
        3,
        &[
            "registrar",
            "call",
            "chat",
            "presence",
            "dialplan",
            "control",
            "trunk",
            "acd",
        ],
    ),
    (4, &["server", "ctl", "api"]),
];

fn floor_of(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(_, ms)| ms.contains(&module)).map(|(f, _)| *f)
}

/// Every `crate::NAME` a module's files mention (code and tests).
fn names(src: &Path, module: &str) -> BTreeSet<String> {
    let mut files = Vec::new();
    let dir = src.join(module);
    if dir.is_dir() {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
    } else {
        files.push(src.join(format!("{module}.rs")));
    }
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name != module && floor_of(&name).is_some() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn modules_name_only_their_floor_or_below_and_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Every module the crate declares has a floor.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let m = line.trim_end_matches(';');
        assert!(floor_of(m).is_some(), "module {m} has no floor in FLOORS");
    }
    let graph: BTreeMap<&str, BTreeSet<String>> = FLOORS
        .iter()
        .flat_map(|(_, ms)| ms.iter())
        .map(|m| (*m, names(&src, m)))
        .collect();
    let mut wrong = Vec::new();
    for (m, named) in &graph {
        for n in named {
            let above = floor_of(n) > floor_of(m);
            if above {
                wrong.push(format!(
                    "{m} (floor {:?}) names {n} (floor {:?})",
                    floor_of(m),
                    floor_of(n)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "modules naming a floor above:\n{}", wrong.join("\n"));
    // Circles: a module that reaches itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = graph[start].iter().cloned().collect();
        while let Some(n) = stack.pop() {
            assert_ne!(n, *start, "an import circle goes through {start}");
            if seen.insert(n.clone()) {
                stack.extend(graph[n.as_str()].iter().cloned());
            }
        }
    }
}
