//! Crash points: a build, an add and a delete are killed with SIGKILL at each named point of
//! the write path (`lesion_search::fault::CRASH_POINTS`). After every kill the index must
//! verify, take the same write again, and a server running beside the writer (a separate
//! `lesion-web` process) must answer every request from a whole generation throughout.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lesion_search::fault::{CRASH_AT_VARIABLE, CRASH_POINTS};

fn indexer(args: &[&str], crash_at: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lesion-indexer"));
    command.args(args);
    match crash_at {
        Some(point) => command.env(CRASH_AT_VARIABLE, point),
        None => command.env_remove(CRASH_AT_VARIABLE),
    };
    command.output().expect("run lesion-indexer")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A dataset folder holding `rows` of `archive`'s table, its images shared by a link.
fn dataset_of_rows(archive: &Path, out: &Path, rows: std::ops::Range<usize>) {
    std::fs::create_dir_all(out).unwrap();
    let table = std::fs::read_to_string(archive.join("DL_info.csv")).unwrap();
    let mut lines = table.lines();
    let mut kept = vec![lines.next().unwrap().to_string()];
    kept.extend(
        lines
            .enumerate()
            .filter(|(i, _)| rows.contains(i))
            .map(|(_, l)| l.to_string()),
    );
    std::fs::write(out.join("DL_info.csv"), kept.join("\n") + "\n").unwrap();
    std::os::unix::fs::symlink(archive.join("Images_png"), out.join("Images_png")).unwrap();
    if archive.join("reports.jsonl").exists() {
        std::fs::copy(archive.join("reports.jsonl"), out.join("reports.jsonl")).unwrap();
    }
}

fn key_of_row(dataset: &Path, row: usize) -> String {
    std::fs::read_to_string(dataset.join("DL_info.csv"))
        .unwrap()
        .lines()
        .nth(row + 1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string()
}

fn searchable(index: &Path) -> usize {
    let verify = indexer(&["verify", "--index", index.to_str().unwrap()], None);
    assert!(verify.status.success(), "verify: {}", text(&verify));
    let manifest_dir = index.join(
        std::fs::read_to_string(index.join("CURRENT"))
            .unwrap()
            .trim(),
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_dir.join("manifest.json")).unwrap())
            .unwrap();
    (manifest["lesions"].as_u64().unwrap() - manifest["deleted"].as_u64().unwrap()) as usize
}

/// One HTTP/1.1 exchange with the server: status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    let reply = String::from_utf8_lossy(&reply);
    let status = reply.get(9..12)?.parse().ok()?;
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// What `/healthz` says is served: (generation, live lesions).
fn served_by(port: u16) -> Option<(u64, usize)> {
    let (status, body) = http(port, "GET", "/healthz", "")?;
    let health: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| {
        (
            health["generation"].as_u64().unwrap_or(0),
            health["lesions"].as_u64().unwrap_or(0) as usize,
        )
    })
}

/// A `lesion-web` process serving `index`, with a client asking it for the served count
/// and a text search until stopped; every answer is kept.
struct LiveServer {
    child: Child,
    port: u16,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<String>>>,
    counts: Arc<Mutex<Vec<usize>>>,
    client: Option<std::thread::JoinHandle<()>>,
}

impl LiveServer {
    /// `None` when the server binary is not built beside the indexer (a lone
    /// `cargo test -p lesion-indexer`); the workspace run builds both.
    fn start(index: &Path) -> Option<Self> {
        let binary = Path::new(env!("CARGO_BIN_EXE_lesion-indexer")).with_file_name("lesion-web");
        if !binary.is_file() {
            eprintln!(
                "skipping the live server: {} is not built",
                binary.display()
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(binary)
            .args(["--index", index.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove(CRASH_AT_VARIABLE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lesion-web");
        let started = Instant::now();
        while served_by(port).is_none() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "lesion-web exited early"
            );
            assert!(started.elapsed() < Duration::from_secs(60), "no /healthz");
            std::thread::sleep(Duration::from_millis(100));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(Mutex::new(Vec::new()));
        let client = {
            let (stop, answers, counts) = (stop.clone(), answers.clone(), counts.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match served_by(port) {
                        Some((_, lesions)) => counts.lock().unwrap().push(lesions),
                        None => answers.lock().unwrap().push("healthz failed".into()),
                    }
                    let search = http(port, "POST", "/api/search", r#"{"text":"lesion","k":5}"#);
                    if let Some((status, body)) = search {
                        if status != 200 {
                            answers
                                .lock()
                                .unwrap()
                                .push(format!("search {status}: {body}"));
                        }
                    } else {
                        answers.lock().unwrap().push("search: no answer".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Some(LiveServer {
            child,
            port,
            stop,
            answers,
            counts,
            client: Some(client),
        })
    }

    /// Waits until the server serves `lesions` (it notices a new generation by itself),
    /// stops the client and returns the failures and the counts it saw.
    fn finish(mut self, lesions: usize) -> (Vec<String>, Vec<usize>) {
        let started = Instant::now();
        while served_by(self.port).map(|(_, n)| n) != Some(lesions)
            && started.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some((_, n)) = served_by(self.port) {
            self.counts.lock().unwrap().push(n);
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(client) = self.client.take() {
            client.join().unwrap();
        }
        let answers = std::mem::take(&mut *self.answers.lock().unwrap());
        let counts = std::mem::take(&mut *self.counts.lock().unwrap());
        (answers, counts)
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    extra: PathBuf,
    /// An index with two generations (build, then one delete), so that a third prunes.
    index: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let synth = indexer(
        &[
            "synth",
            "--out",
            archive.to_str().unwrap(),
            "--lesions",
            "90",
            "--seed",
            "21",
        ],
        None,
    );
    assert!(synth.status.success(), "{}", text(&synth));
    let rows = std::fs::read_to_string(archive.join("DL_info.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    let (base, extra) = (dir.path().join("base"), dir.path().join("extra"));
    dataset_of_rows(&archive, &base, 0..rows - 6);
    dataset_of_rows(&archive, &extra, rows - 6..rows);
    let index = dir.path().join("index");
    let i = index.to_str().unwrap();
    let build = indexer(
        &["build", "--dataset", base.to_str().unwrap(), "--index", i],
        None,
    );
    assert!(build.status.success(), "{}", text(&build));
    let delete = indexer(&["delete", "--index", i, &key_of_row(&base, 0)], None);
    assert!(delete.status.success(), "{}", text(&delete));
    Fixture {
        _dir: dir,
        base,
        extra,
        index,
    }
}

/// The live server answered everything, only ever from a whole generation, and serves the
/// final one; returns a note for the matrix.
fn check_server(
    server: Option<LiveServer>,
    last: usize,
    whole: &[usize],
    name: &str,
    point: &str,
) -> String {
    let Some(server) = server else {
        return String::new();
    };
    let (failures, counts) = server.finish(last);
    assert!(
        failures.is_empty(),
        "{name} killed at {point}: the live server failed: {failures:?}"
    );
    assert!(
        counts.iter().all(|n| whole.contains(n)),
        "{name} killed at {point}: the live server served counts {counts:?}, expected only {whole:?}"
    );
    assert_eq!(
        counts.last(),
        Some(&last),
        "{name} at {point}: server did not move on"
    );
    format!(", live server {} answers", counts.len())
}

#[test]
fn writes_killed_at_every_point_leave_a_whole_index_that_takes_the_write_again() {
    let fixture = fixture();
    let before = searchable(&fixture.index);
    let deleted_key = key_of_row(&fixture.base, 1);
    let base = fixture.base.to_str().unwrap().to_string();
    let extra = fixture.extra.to_str().unwrap().to_string();
    let writes: [(&str, Vec<String>, usize); 3] = [
        (
            "build",
            vec!["build".into(), "--dataset".into(), base.clone()],
            before + 1,
        ),
        (
            "add",
            vec!["add".into(), "--dataset".into(), extra],
            before + 6,
        ),
        ("delete", vec!["delete".into(), deleted_key], before - 1),
    ];
    let mut matrix = Vec::new();
    for (name, args, after) in &writes {
        for point in CRASH_POINTS {
            let work = tempfile::tempdir().unwrap();
            let index = work.path().join("index");
            copy_dir(&fixture.index, &index);
            let i = index.to_str().unwrap();
            let server = LiveServer::start(&index);
            let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
            full.extend(["--index", i]);
            let crashed = indexer(&full, Some(point));
            let killed = crashed.status.signal().is_some();
            if !killed {
                // This write does not pass this point (a delete embeds nothing).
                assert!(
                    crashed.status.success(),
                    "{name} {point}: {}",
                    text(&crashed)
                );
                assert_eq!(searchable(&index), *after, "{name} past {point}");
                check_server(server, *after, &[before, *after], name, point);
                matrix.push(format!("{name:<6} {point:<26} not on this path"));
                continue;
            }
            // Whatever was interrupted, the served generation is whole and verifies.
            let served = searchable(&index);
            assert!(
                served == before || served == *after,
                "{name} killed at {point}: {served} lesions served, expected {before} or {after}"
            );
            // The same write again succeeds (or finds it already done) and verifies.
            let again = indexer(&full, None);
            let done = searchable(&index);
            assert!(
                again.status.success() || served == *after,
                "{name} after a kill at {point}: {}",
                text(&again)
            );
            assert_eq!(done, *after, "{name} after a kill at {point}");
            let served_live = check_server(server, *after, &[before, *after], name, point);
            matrix.push(format!(
                "{name:<6} {point:<26} killed, served {served}, recovered to {done}{served_live}"
            ));
        }
    }
    eprintln!("crash-point matrix:\n{}", matrix.join("\n"));
    let killed = matrix.iter().filter(|l| l.contains("killed")).count();
    assert!(
        killed >= 14,
        "only {killed} of the write/point pairs were reached"
    );
}

/// The one folder `add --image` staged under `added/`, and the staging files, of `index`.
fn leftovers(index: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let list = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    (list(index.join("added")), list(index.join("staging")))
}

#[test]
fn adds_from_a_slice_killed_midway_leave_nothing_once_the_next_write_lands() {
    let fixture = fixture();
    let work = tempfile::tempdir().unwrap();
    let index = work.path().join("index");
    copy_dir(&fixture.index, &index);
    let i = index.to_str().unwrap();
    let before = searchable(&index);
    let key = key_of_row(&fixture.base, 2);
    let (series, slice) = key.rsplit_once('_').unwrap();
    let image = fixture.base.join("Images_png").join(series).join(slice);
    let add = |patient: &str| -> Vec<String> {
        [
            "add",
            "--index",
            i,
            "--image",
            image.to_str().unwrap(),
            "--box",
            "60,60,100,100",
            "--patient",
            patient,
            "--study",
            "1",
            "--spacing-mm",
            "0.8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    for (point, patient) in [("slice-staged", "990001"), ("staged-batch", "990002")] {
        let args = add(patient);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let crashed = indexer(&args, Some(point));
        assert!(
            crashed.status.signal().is_some(),
            "add --image was not killed at {point}: {}",
            text(&crashed)
        );
        assert_eq!(searchable(&index), before, "killed at {point}");
    }
    let (added, staging) = leftovers(&index);
    assert_eq!(
        added.len(),
        2,
        "each killed add leaves its staged slice: {added:?}"
    );
    assert_eq!(
        staging.len(),
        1,
        "the second left its embedding: {staging:?}"
    );

    // The next write lands and removes what the killed ones left; its own slice stays.
    let args = add("990003");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let landed = indexer(&args, None);
    assert!(landed.status.success(), "{}", text(&landed));
    assert_eq!(searchable(&index), before + 1);
    let (added, staging) = leftovers(&index);
    assert_eq!(
        added.len(),
        1,
        "only the landed add's slice is left: {added:?}"
    );
    assert!(staging.is_empty(), "{staging:?}");

    // Once its lesion is deleted and the generation that still showed it is pruned, the
    // slice goes too (a reader of the previous generation may need it until then).
    let added_key = "990003_01_01_001.png";
    let deleted = indexer(&["delete", "--index", i, added_key], None);
    assert!(deleted.status.success(), "{}", text(&deleted));
    assert_eq!(
        leftovers(&index).0.len(),
        1,
        "the previous generation still shows it"
    );
    let other = indexer(
        &["delete", "--index", i, &key_of_row(&fixture.base, 3)],
        None,
    );
    assert!(other.status.success(), "{}", text(&other));
    assert!(leftovers(&index).0.is_empty(), "{:?}", leftovers(&index).0);
    assert_eq!(searchable(&index), before - 1);
}
