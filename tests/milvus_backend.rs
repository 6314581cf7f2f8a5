//! The Milvus backend against a real Milvus 2.3.5 standalone server (PyPI `milvus`), started
//! here on a temporary data folder: the same hits as the embedded backend for hybrid,
//! filtered and by-lesion search, the same facets, vector recall against the exact scan,
//! and add and delete mirrored into new collections.
//!
//! The BM25 path (Milvus 2.5+ ranks the report text itself) runs against milvus-lite 2.5.1,
//! the one 2.5 server these machines can run.
//!
//! The servers come from the venvs `.ci/milvus-venv` makes (`LESION_MILVUS_VENV`, default
//! `~/.cache/lesion-search/milvus-2.3.5`; `LESION_MILVUS_LITE_VENV`, default
//! `~/.cache/lesion-search/milvus-lite-2.5.1`). Without it the test skips, saying so, unless
//! `LESION_MILVUS_TESTS=required` (as `.ci/run` sets when it could make the venv). Milvus
//! listens on every interface, so `.ci/run` skips it in the main run (`=later`) and runs it
//! in a network namespace whose only interface is loopback.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lesion_search::archive::{add, build, delete, AddOptions, Archive, BuildOptions};
use lesion_search::backend::milvus::{expression_of, MilvusBackend};
use lesion_search::backend::{self, BackendChoice, MilvusIndex, MilvusSettings};
use lesion_search::dataset::{CoarseType, Sex, Split};
use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::filter::{Filter, Range};
use lesion_search::index::{dot, GraphParams};
use lesion_search::search::{Engine, SearchRequest};
use lesion_search::text::document_text;

fn venv_dir(variable: &str, default: &str) -> Option<PathBuf> {
    std::env::var_os(variable).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/lesion-search").join(default))
    })
}

fn venv() -> Option<PathBuf> {
    let dir = venv_dir("LESION_MILVUS_VENV", "milvus-2.3.5")?;
    dir.join("bin/milvus-server").exists().then_some(dir)
}

/// The folder of milvus-lite's server binary and its libraries, in its venv.
fn lite_lib() -> Option<PathBuf> {
    let lib = venv_dir("LESION_MILVUS_LITE_VENV", "milvus-lite-2.5.1")?.join("lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/milvus_lite/lib"))
        .find(|l| l.join("milvus").exists())
}

/// Skips (returns `None`) with a message, or fails under `LESION_MILVUS_TESTS=required`.
fn skip_unless<T>(found: Option<T>, what: &str) -> Option<T> {
    if std::env::var("LESION_MILVUS_TESTS").is_ok_and(|v| v == "later") {
        eprintln!("milvus_backend: skipped here; .ci/run runs it apart, in a loopback-only network namespace");
        return None;
    }
    if found.is_none() {
        let message = format!("milvus_backend: skipped, no {what} (run .ci/milvus-venv)");
        assert!(!required(), "{message}, but LESION_MILVUS_TESTS=required");
        eprintln!("{message}");
    }
    found
}

fn required() -> bool {
    std::env::var("LESION_MILVUS_TESTS").is_ok_and(|v| v == "required")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `milvus-server`, stopped with SIGINT (it hangs on SIGTERM) when dropped.
struct Server {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Server {
    /// Milvus 2.3.5 standalone.
    fn start(venv: &Path) -> Server {
        Server::run(|data, port| {
            let mut command = Command::new(venv.join("bin/milvus-server"));
            command
                .arg("--data")
                .arg(data.join("milvus"))
                .args(["--proxy-port", &port.to_string()])
                .args(["--etcd-port", &free_port().to_string()])
                .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()));
            command
        })
    }

    /// milvus-lite 2.5.1's server (it binds the address it is given: loopback).
    fn start_lite(lib: &Path) -> Server {
        Server::run(|data, port| {
            let mut command = Command::new(lib.join("milvus"));
            command
                .arg(data.join("lite.db"))
                .arg(format!("127.0.0.1:{port}"))
                .arg("ERROR")
                .env("LD_LIBRARY_PATH", lib);
            command
        })
    }

    fn run(command: impl FnOnce(&Path, u16) -> Command) -> Server {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(data.path().join("server.log")).unwrap();
        let child = command(data.path(), port)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _data: data,
        };
        let started = Instant::now();
        loop {
            let settings = server.settings("probe");
            if let Ok(c) = backend::milvus::Connection::connect(&settings) {
                if c.ping().is_ok() {
                    return server;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "milvus-server did not answer on {} within 120 s; its log: {}",
                server.url,
                ["server.log", "milvus/logs/milvus-stdout.log"]
                    .iter()
                    .map(|log| std::fs::read_to_string(server._data.path().join(log))
                        .unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
                    .lines()
                    .filter(|l| !l.contains("[INFO]") && !l.contains("[DEBUG]"))
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn settings(&self, collection: &str) -> MilvusSettings {
        MilvusSettings {
            url: self.url.clone(),
            collection: collection.into(),
            index: MilvusIndex::Auto,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ids(engine: &Engine, request: &SearchRequest) -> Vec<u32> {
    engine
        .search(request)
        .unwrap()
        .hits
        .iter()
        .map(|h| h.id)
        .collect()
}

/// Filters a user sets: none, sex and age, types, size, and a body range in one split with
/// patients left out.
fn filters() -> Vec<Filter> {
    vec![
        Filter::default(),
        Filter {
            sex: Some(Sex::Female),
            age: Range {
                min: Some(30.0),
                max: Some(70.0),
            },
            ..Filter::default()
        },
        Filter {
            types: vec![CoarseType::Lung, CoarseType::Liver],
            ..Filter::default()
        },
        Filter {
            long_mm: Range {
                min: Some(15.0),
                max: None,
            },
            ..Filter::default()
        },
        Filter {
            location_z: Range {
                min: Some(0.2),
                max: Some(0.8),
            },
            split: Some(Split::Train),
            exclude_patients: vec![1, 2, 3],
            ..Filter::default()
        },
    ]
}

/// Requests a user makes, answered by both backends; every answer compared whole.
fn assert_same_answers(embedded: &Engine, milvus: &Engine) {
    let live: Vec<u32> = (0..embedded.capacity() as u32)
        .filter(|&id| embedded.is_live(id))
        .collect();
    let filters = filters();
    let mut compared = 0;
    for (i, &id) in live.iter().enumerate().step_by(7) {
        for text in [None, Some("nodule")] {
            let request = SearchRequest {
                lesion: Some(id),
                text: text.map(String::from),
                filter: filters[i % filters.len()].clone(),
                k: 10,
                ..Default::default()
            };
            let theirs = milvus.search(&request).unwrap();
            let ours = embedded.search(&request).unwrap();
            let hits = |r: &lesion_search::search::SearchResponse| {
                r.hits.iter().map(|h| h.id).collect::<Vec<_>>()
            };
            assert_eq!(hits(&theirs), hits(&ours), "{request:?}");
            assert_eq!(theirs.facets, ours.facets, "{request:?}");
            assert_eq!(theirs.text_matches, ours.text_matches);
            assert_eq!(
                theirs.suggestion.map(|s| s.coarse_type),
                ours.suggestion.map(|s| s.coarse_type)
            );
            compared += 1;
        }
    }
    assert!(compared >= 20, "{compared} requests compared");
    // Text alone and a cohort (no query) are the records' and tantivy's: the same too.
    for request in [
        SearchRequest {
            text: Some("lymph node".into()),
            ..Default::default()
        },
        SearchRequest {
            filter: filters[1].clone(),
            k: 50,
            ..Default::default()
        },
    ] {
        assert_eq!(ids(milvus, &request), ids(embedded, &request));
    }
}

#[test]
fn milvus_answers_as_the_embedded_backend_through_build_add_and_delete() {
    let Some(venv) = skip_unless(venv(), "Milvus 2.3.5 venv (LESION_MILVUS_VENV)") else {
        return;
    };
    // Its embedded etcd always takes 127.0.0.1:2380, whatever ports it is given.
    let etcd_free = TcpListener::bind("127.0.0.1:2380").is_ok();
    if skip_unless(
        etcd_free.then_some(()),
        "free port 127.0.0.1:2380 (another Milvus 2.3 runs here; its etcd holds it)",
    )
    .is_none()
    {
        return;
    }
    let server = Server::start(&venv);
    let settings = server.settings("lesions_test");
    let choice = BackendChoice::Milvus(settings.clone());

    let archive = common::synth_archive(150, 81, true);
    let (older, newer) = common::split_archive(archive.path(), 130);
    let model = bundled_lesion_cnn().unwrap();
    let index = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        dataset: older.path().to_path_buf(),
        reports: None,
        model: &model,
        graph: GraphParams::default(),
        labels: None,
    };
    build(index.path(), &options, &|_| {}).unwrap();

    // Before the mirror, the Milvus backend refuses the generation and says what to run.
    let model = Arc::new(model);
    let refused = Engine::open_with(index.path(), model.clone(), &choice)
        .err()
        .expect("no collection yet")
        .to_string();
    assert!(refused.contains("milvus-sync"), "{refused}");

    let mirrored = backend::mirror(index.path(), &choice).unwrap().unwrap();
    assert!(!mirrored.already && mirrored.rows == 130, "{mirrored:?}");
    let again = backend::mirror(index.path(), &choice).unwrap().unwrap();
    assert!(
        again.already,
        "a second mirror of the same generation writes nothing"
    );

    let embedded = Engine::open(index.path(), model.clone()).unwrap();
    let milvus = Engine::open_with(index.path(), model.clone(), &choice).unwrap();
    assert_eq!(milvus.backend().name, "milvus");
    assert!(milvus.backend().text.contains("tantivy"));
    assert_eq!(milvus.verify().unwrap(), Vec::<String>::new());
    assert_same_answers(&embedded, &milvus);

    // Each filter as a Milvus expression selects exactly the lesions the catalog allows.
    {
        let (published, _, text) = Archive::open(index.path()).unwrap().into_parts();
        let direct = MilvusBackend::open(&settings, &published, text).unwrap();
        for filter in filters() {
            assert_eq!(
                direct.count(&filter).unwrap(),
                embedded.allowed(&filter).len(),
                "{filter:?} as `{}`",
                expression_of(&filter)
            );
        }
    }

    // The approximate part alone, against the exact scan of the generation's vectors.
    let vectors = embedded.vectors().unwrap();
    let all = embedded.allowed(&Filter::default());
    let (mut found, mut wanted) = (0, 0);
    for id in all.iter().step_by(5) {
        let query = vectors.vector(id);
        let mut exact: Vec<(u32, f32)> = all
            .iter()
            .map(|o| (o, dot(query, vectors.vector(o))))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        exact.truncate(10);
        let (hits, _) = milvus.nearest(query, 10, &all).unwrap();
        wanted += exact.len();
        found += hits
            .iter()
            .filter(|h| exact.iter().any(|e| e.0 == h.id))
            .count();
    }
    let recall = found as f64 / wanted as f64;
    assert!(
        recall >= 0.99,
        "Milvus recall@10 {recall:.4} (n = {wanted})"
    );
    drop((embedded, milvus));

    // Add: a new generation, mirrored into a new collection; the added lesions are found.
    let added = add(
        index.path(),
        &AddOptions {
            dataset: newer.path().to_path_buf(),
            reports: None,
            model: model.as_ref(),
            graph: GraphParams::default(),
        },
        &|_| {},
    )
    .unwrap();
    // Not mirrored yet: refused, never served from the old collection.
    assert!(Engine::open_with(index.path(), model.clone(), &choice).is_err());
    let mirrored = backend::mirror(index.path(), &choice).unwrap().unwrap();
    assert_eq!(mirrored.rows, 150);
    let embedded = Engine::open(index.path(), model.clone()).unwrap();
    let milvus = Engine::open_with(index.path(), model.clone(), &choice).unwrap();
    assert_eq!(milvus.verify().unwrap(), Vec::<String>::new());
    let (new_id, _) = added.changed[2].clone();
    let own = SearchRequest {
        lesion: Some(new_id),
        exclude_query_patient: false,
        group_by_patient: false,
        k: 5,
        ..Default::default()
    };
    assert_eq!(
        ids(&milvus, &own)[0],
        new_id,
        "an added lesion finds itself"
    );
    assert_same_answers(&embedded, &milvus);
    drop((embedded, milvus));

    // Delete: gone from Milvus too; the generation before the previous one is dropped.
    let (_, gone_key) = added.changed[2].clone();
    let deleted = delete(index.path(), &[gone_key], GraphParams::default()).unwrap();
    assert_eq!(deleted.live, 149);
    let mirrored = backend::mirror(index.path(), &choice).unwrap().unwrap();
    assert_eq!(mirrored.rows, 149);
    assert!(
        mirrored.dropped.iter().any(|c| c.contains("_gen_000001_")),
        "{mirrored:?}"
    );
    let embedded = Engine::open(index.path(), model.clone()).unwrap();
    let milvus = Engine::open_with(index.path(), model.clone(), &choice).unwrap();
    assert_eq!(milvus.verify().unwrap(), Vec::<String>::new());
    // verify (clean above) compares every lid in Milvus with the live records.
    assert!(!milvus.is_live(new_id));
    assert_same_answers(&embedded, &milvus);
    drop((embedded, milvus));

    // Another archive under the same name is refused, naming the fix; under its own name
    // it lives beside the first, which stays served.
    let other_archive = common::synth_archive(12, 83, true);
    let other = tempfile::tempdir().unwrap();
    build(
        other.path(),
        &BuildOptions {
            dataset: other_archive.path().to_path_buf(),
            reports: None,
            model: model.as_ref(),
            graph: GraphParams::default(),
            labels: None,
        },
        &|_| {},
    )
    .unwrap();
    let clash = backend::mirror(other.path(), &choice)
        .unwrap_err()
        .to_string();
    assert!(clash.contains("--milvus-collection"), "{clash}");
    let own = BackendChoice::Milvus(server.settings("other_archive"));
    assert_eq!(
        backend::mirror(other.path(), &own).unwrap().unwrap().rows,
        12
    );
    let first = Engine::open_with(index.path(), model.clone(), &choice).unwrap();
    assert_eq!(first.verify().unwrap(), Vec::<String>::new());
}

#[test]
fn milvus_lite_ranks_report_text_by_bm25_beside_the_same_vectors() {
    let Some(lib) = skip_unless(
        lite_lib(),
        "milvus-lite 2.5.1 venv (LESION_MILVUS_LITE_VENV)",
    ) else {
        return;
    };
    let server = Server::start_lite(&lib);
    let choice = BackendChoice::Milvus(server.settings("lesions_lite"));
    let archive = common::synth_archive(120, 82, true);
    let model = bundled_lesion_cnn().unwrap();
    let index = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        dataset: archive.path().to_path_buf(),
        reports: None,
        model: &model,
        graph: GraphParams::default(),
        labels: None,
    };
    build(index.path(), &options, &|_| {}).unwrap();
    backend::mirror(index.path(), &choice).unwrap();
    let model = Arc::new(model);
    let embedded = Engine::open(index.path(), model.clone()).unwrap();
    let milvus = Engine::open_with(index.path(), model, &choice).unwrap();
    assert_eq!(
        milvus.backend().text,
        "milvus-bm25",
        "{:?}",
        milvus.backend()
    );
    assert_eq!(milvus.verify().unwrap(), Vec::<String>::new());

    let mut overlap = 0.0;
    let queries = ["nodule", "lymph node", "liver lesion", "cyst", "mass"];
    for text in queries {
        let request = SearchRequest {
            text: Some(text.into()),
            group_by_patient: false,
            k: 10,
            ..Default::default()
        };
        let theirs = milvus.search(&request).unwrap();
        let ours = embedded.search(&request).unwrap();
        assert!(!theirs.hits.is_empty(), "{text}: no BM25 hits in Milvus");
        let matched = theirs.text_matches.unwrap();
        assert!(matched >= theirs.hits.len(), "{text}: {matched} matches");
        let stems: Vec<String> = text
            .split(' ')
            .map(|w| w[..w.len().min(5)].to_string())
            .collect();
        for hit in &theirs.hits {
            let lesion = milvus.lesion(hit.id).unwrap().unwrap();
            let indexed = document_text(&lesion.report, &lesion.tags).to_lowercase();
            assert!(
                stems.iter().any(|s| indexed.contains(s.as_str())),
                "{text}: hit {} does not mention it: {indexed}",
                hit.id
            );
            let snippet = &hit.text.as_ref().expect("a text match").snippet;
            assert!(
                !snippet.text.is_empty(),
                "{text}: no snippet for {}",
                hit.id
            );
        }
        let ids: Vec<u32> = ours.hits.iter().map(|h| h.id).collect();
        overlap += theirs.hits.iter().filter(|h| ids.contains(&h.id)).count() as f64
            / ids.len().max(1) as f64;
    }
    let overlap = overlap / queries.len() as f64;
    eprintln!("milvus-lite BM25 top 10 shared with tantivy's: {overlap:.2}");
    assert!(
        overlap >= 0.5,
        "Milvus BM25 and tantivy share {overlap:.2} of the top 10"
    );

    // Vectors on lite (FLAT): the same by-lesion answers.
    for id in (0..120).step_by(9) {
        let request = SearchRequest {
            lesion: Some(id),
            k: 10,
            ..Default::default()
        };
        assert_eq!(ids(&milvus, &request), ids(&embedded, &request));
    }
}
