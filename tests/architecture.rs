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

/// Every `.rs` file under `dir` with its code: comments and test modules left out.
fn code_of(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut files = Vec::new();
    if dir.is_dir() {
        sources(dir, &mut files);
    }
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = code
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            (path, code)
        })
        .collect()
}

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The library's paths a piece of code names: `lesion_search::a::b` as `a::b`.
fn library_paths(code: &str) -> Vec<String> {
    code.match_indices("lesion_search::")
        .map(|(i, _)| {
            code[i + "lesion_search::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect()
        })
        .collect()
}

/// The products (the server and the CLI) open, write and mirror an index only through
/// `service`, so no edge knows `CURRENT`, the write lock or the order of publishing and
/// mirroring; and they use the library's facade modules, not its internals.
#[test]
fn binaries_reach_an_index_only_through_the_service() {
    let facade = [
        "service", "search", "archive", "backend", "dataset", "imaging", "embed", "eval", "synth",
        "followup", "index", "text", "store", "filter", "ontology", "util", "version", "Error",
        "Result",
    ];
    // `index`, `text` and `store` are behind the facade: a product may name only these
    // plain types and helpers of theirs, never what opens, searches or writes a store.
    // What only `service` may call: the engine's opening, the archive's write functions,
    // the backend's opening and mirroring, the write lock.
    let internal = [
        "Engine::open",
        "Engine::with_backend",
        "backend::open",
        "backend::mirror",
        "archive::WriteLock",
    ];
    let archive_writes = [
        "build",
        "build_locked",
        "build_from_shards",
        "build_from_shards_locked",
        "add",
        "add_locked",
        "add_lesion",
        "add_lesion_locked",
        "delete",
        "delete_locked",
    ];
    let root = workspace();
    let mut checked = 0;
    for product in ["indexer/src", "web/src"] {
        for (path, code) in code_of(&root.join(product)) {
            checked += 1;
            let shown = path.strip_prefix(&root).unwrap().display().to_string();
            for named in library_paths(&code) {
                let module = named.split("::").next().unwrap_or("");
                assert!(
                    facade.contains(&module),
                    "{shown} names lesion_search::{named}, outside the facade modules {facade:?}"
                );
                check_plain_types(&shown, &named, &code);
                for item in internal {
                    assert!(
                        !named.starts_with(item) && !code.contains(&format!(" {item}(")),
                        "{shown} uses {item}: open and write an index through lesion_search::service"
                    );
                }
            }
            assert!(
                !code.contains("Engine::open") && !code.contains("\"CURRENT\""),
                "{shown} opens a generation itself: use service::Index"
            );
            for (i, _) in code.match_indices("lesion_search::archive::{") {
                let list = &code[i..i + code[i..].find('}').unwrap()];
                for write in archive_writes {
                    let named = list
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .any(|word| word == write);
                    assert!(
                        !named,
                        "{shown} imports archive::{write}: write through service::Writer"
                    );
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} product files found");
}

/// What the products may name of the modules behind the facade.
const BEHIND_THE_FACADE: [(&str, &[&str]); 3] = [
    (
        "index",
        &[
            "GraphBuilder",
            "GraphParams",
            "GraphOutcome",
            "RECALL_TARGET",
            "Plan",
            "VectorIndex",
            "VectorSet",
            "write_fvecs",
        ],
    ),
    ("text", &["Snippet", "check_query"]),
    ("store", &["StoredLesion"]),
];

fn check_plain_types(shown: &str, named: &str, code: &str) {
    let Some((module, rest)) = named.split_once("::") else {
        return;
    };
    let Some((_, allowed)) = BEHIND_THE_FACADE.iter().find(|(m, _)| *m == module) else {
        return;
    };
    // `index::{A, B}`: the list follows the path in the code.
    let items: Vec<String> = if rest.is_empty() {
        let start = code
            .find(&format!("lesion_search::{module}::{{"))
            .unwrap_or(0);
        let list = &code[start..start + code[start..].find('}').unwrap_or(0)];
        let list = list.split_once('{').map_or("", |(_, l)| l);
        list.split(',')
            .map(|item| item.trim().to_string())
            .filter(|item| !item.is_empty())
            .collect()
    } else {
        vec![rest.split("::").next().unwrap_or("").to_string()]
    };
    for item in items {
        assert!(
            allowed.contains(&item.as_str()),
            "{shown} names lesion_search::{module}::{item}: the products reach {module} only \
             through the facade (allowed: {allowed:?})"
        );
    }
}

/// Each engine crate is named in one module of the library (ARCHITECTURE.md, "Invariants").
#[test]
fn each_engine_crate_is_named_in_one_module() {
    let owners: [(&str, &[&str]); 11] = [
        ("candle_core", &["src/embed/"]),
        ("gemm", &["src/embed/ct_resnet.rs"]),
        ("candle_nn", &["src/embed/"]),
        ("tantivy", &["src/text/"]),
        ("sled", &["src/store/"]),
        ("hnsw_rs", &["src/index/hnsw/hnsw_rs.rs"]),
        ("anndists", &["src/index/hnsw/hnsw_rs.rs"]),
        ("dicom_object", &["src/imaging/dicom.rs"]),
        ("dicom_pixeldata", &["src/imaging/dicom.rs"]),
        ("milvus", &["src/backend/milvus/"]),
        ("png", &["src/imaging/png16.rs"]),
    ];
    let root = workspace();
    let files = code_of(&root.join("src"));
    for (krate, homes) in owners {
        let pattern = format!("{krate}::");
        let mut users = Vec::new();
        for (path, code) in &files {
            // A file that declares a module of the crate's name (`mod milvus;`) names that
            // module, not the crate.
            if code.contains(&format!("mod {krate};")) {
                continue;
            }
            let shown = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let names_it = code.match_indices(&pattern).any(|(i, _)| {
                // `a_png::` or `x.png::` are other names; a path starts the crate's name.
                let before = code[..i].chars().last().unwrap_or(' ');
                !(before.is_ascii_alphanumeric() || before == '_' || before == ':')
            });
            if names_it {
                users.push(shown);
            }
        }
        assert!(
            !users.is_empty(),
            "nothing names {krate}: is the table stale?"
        );
        let strays: Vec<&String> = users
            .iter()
            .filter(|user| !homes.iter().any(|home| user.starts_with(home)))
            .collect();
        assert!(
            strays.is_empty(),
            "{krate} is named outside {homes:?}: {strays:?}"
        );
    }
}

/// Inside each folder of the library, the files' `super::sibling::` paths point one way:
/// no two files of a module lean on each other.
#[test]
fn files_of_a_module_import_one_way() {
    let src = workspace().join("src");
    let mut folders = vec![src.clone()];
    let mut checked = 0;
    while let Some(folder) = folders.pop() {
        let mut siblings = BTreeMap::new();
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                if name != "mod" && name != "lib" {
                    siblings.insert(name, path);
                }
            }
        }
        if folder == src {
            continue; // top-level modules: module_dependencies_point_one_way
        }
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, path) in &siblings {
            let text = std::fs::read_to_string(path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let uses = graph.entry(name.clone()).or_default();
            for (i, _) in code.match_indices("super::") {
                let next: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if next != *name && siblings.contains_key(&next) {
                    uses.insert(next);
                }
            }
        }
        for name in graph.keys() {
            checked += 1;
            assert!(
                !reachable(&graph, name).contains(name),
                "{}: {name}.rs reaches itself through {:?}",
                folder.strip_prefix(&src).unwrap().display(),
                graph[name]
            );
        }
    }
    assert!(checked > 50, "only {checked} files checked");
}
