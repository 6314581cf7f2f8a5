//! Crash points: a build, an add and a delete are killed with SIGKILL at each named point of
//! the write path (`lesion_search::fault::CRASH_POINTS`). After every kill the index must
//! verify, serve a whole generation, and take the same write again.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
            matrix.push(format!(
                "{name:<6} {point:<26} killed, served {served}, recovered to {done}"
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
