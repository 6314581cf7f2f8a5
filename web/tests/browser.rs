//! The web UI in a real headless Chromium: `web/ui-tests/ui.mjs` (playwright-core) drives
//! the page served by the `lesion-web` binary over a generated index: upload a real DICOM,
//! draw a box, search, open a detail, pivot, refine, text search with a filter, export, Back,
//! a bad file, the keyboard. Screenshots of every step land in `target/ui-screenshots/`.
//!
//! Needs Node.js, `npm ci` in `web/ui-tests/` and Debian's `chromium` (`.ci/run` installs
//! them). Without them the test skips with a message, unless `LESION_UI_TESTS=required`
//! (set by CI), where it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lesion_search::archive::{build, BuildOptions};
use lesion_search::embed::bundled_lesion_cnn;
use lesion_search::index::GraphParams;
use lesion_search::synth::{generate, SynthOptions};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const UI_KEY: &str = "ui-test-read-key-0123456789";
const UI_ADMIN_KEY: &str = "ui-test-admin-key-0123456789";

fn missing_tools(ui_tests: &Path, chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node".to_string());
    }
    if !ui_tests.join("node_modules/playwright-core").is_dir() {
        missing.push(format!(
            "playwright-core (run `npm ci` in {})",
            ui_tests.display()
        ));
    }
    if !chromium.is_file() {
        missing.push(format!("{} (apt-get install chromium)", chromium.display()));
    }
    missing
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_health(port: u16, server: &mut Child) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("lesion-web exited early: {status}");
        }
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ =
                stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("lesion-web did not answer /healthz within 60 s");
}

fn real_dicom() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../../shared/data/dicom/chest_ct_rle.dcm");
    if shared.is_file() {
        shared
    } else {
        eprintln!("../shared/data/dicom absent: uploading the copy committed under data/dicom");
        root.join("../data/dicom/chest_ct_rle.dcm")
    }
}

#[test]
fn the_ui_works_end_to_end_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ui_tests = root.join("ui-tests");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let missing = missing_tools(&ui_tests, &chromium);
    if !missing.is_empty() {
        let message = format!("browser test needs: {}", missing.join(", "));
        if std::env::var("LESION_UI_TESTS").as_deref() == Ok("required") {
            panic!("{message}");
        }
        eprintln!("SKIP the_ui_works_end_to_end_in_chromium: {message}");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let options = SynthOptions {
        lesions: 300,
        seed: 11,
        label_train: true,
        ..Default::default()
    };
    generate(&archive, &options, &|_, _| {}).unwrap();
    let model = bundled_lesion_cnn().unwrap();
    let index = dir.path().join("index");
    let build_options = BuildOptions {
        dataset: archive,
        reports: None,
        model: &model,
        graph: GraphParams::default(),
        labels: None,
    };
    build(&index, &build_options, &|_| {}).unwrap();

    // A shallow max_offset, so that the UI's stop at the deepest page is exercised.
    let settings = dir.path().join("settings.json");
    std::fs::write(&settings, r#"{"max_offset": 20}"#).unwrap();
    let port = free_port();
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_lesion-web"))
            .args([
                "--index",
                index.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
                settings.to_str().unwrap(),
            ])
            // With a read key: the UI must ask for it and carry it on every request,
            // images included.
            .env("LESION_WEB_READ_KEY", UI_KEY)
            .env("LESION_WEB_ADMIN_KEY", UI_ADMIN_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lesion-web"),
    );
    wait_for_health(port, &mut server.0);

    let screenshots = root.join("../target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    let status = Command::new("node")
        .current_dir(&ui_tests)
        .arg("ui.mjs")
        .args(["--base", &format!("http://127.0.0.1:{port}")])
        .args(["--dicom", real_dicom().to_str().unwrap()])
        .args(["--out", screenshots.to_str().unwrap()])
        .args(["--chromium", chromium.to_str().unwrap()])
        .args(["--key", UI_KEY])
        .args(["--admin-key", UI_ADMIN_KEY])
        .status()
        .expect("run node");
    assert!(
        status.success(),
        "the UI script failed; see {}/failure.png",
        screenshots.display()
    );
    assert!(screenshots.join("PASSED").is_file());
}
