//! The library's modules depend on each other one way (ARCHITECTURE.md, "Invariants"): no
//! cycle, the engine never reaches the demo generator or the measurements, and the bottom
//! layers (`util`, `imaging`, `dataset`) use nothing above them. Read from the sources'
//! `crate::` paths, test modules left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module of the library -> the top-level modules its code names.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let module_of = |path: &Path| {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        first.to_string_lossy().trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|p| module_of(p))
        .filter(|m| m != "lib")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let entry = graph.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name != module && modules.contains(&name) {
                entry.insert(name);
            }
        }
    }
    graph
}

fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(m) = stack.pop() {
        for next in graph.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn module_dependencies_point_one_way() {
    let graph = dependencies();
    assert!(
        graph.contains_key("search") && graph.contains_key("util"),
        "{graph:?}"
    );
    for module in graph.keys() {
        assert!(
            !reachable(&graph, module).contains(module),
            "{module} depends on itself through {:?}",
            graph[module]
        );
    }
    for engine in [
        "util", "imaging", "dataset", "filter", "index", "store", "text", "embed", "followup",
        "archive", "backend", "search",
    ] {
        let reach = reachable(&graph, engine);
        for above in ["synth", "eval", "fuzz_harness"] {
            assert!(
                !reach.contains(above),
                "{engine} reaches {above}: {:?}",
                graph[engine]
            );
        }
    }
    let allowed: [(&str, &[&str]); 4] = [
        ("util", &["error"]),
        ("imaging", &["error", "util"]),
        ("dataset", &["error", "util", "imaging"]),
        ("filter", &["dataset"]),
    ];
    for (module, may_use) in allowed {
        let extra: Vec<&String> = graph[module]
            .iter()
            .filter(|m| !may_use.contains(&m.as_str()))
            .collect();
        assert!(extra.is_empty(), "{module} uses {extra:?}");
    }
}
