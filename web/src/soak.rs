//! `lesion-web soak`: a server under mixed, sustained load for minutes, hostile requests
//! mixed in, writes every few seconds. It serves a private copy of the index from a child
//! process (so its memory is measured alone) and reports what a maintainer must know before
//! exposing it: 5xx answers to valid requests (must be none), requests shed with 503 while
//! busy, resident memory at start, end and peak, hostile requests that were not refused
//! with a 4xx, and whether every acknowledged write is visible at the end.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use crate::load::{exchange, LoadRequest, Reply};

const SOAK_READ_KEY: &str = "soak-read-key-0123456789abcdef";
const SOAK_ADMIN_KEY: &str = "soak-admin-key-0123456789abcdef";

/// What the soak found.
#[derive(Debug, Default, Serialize)]
pub struct SoakReport {
    pub seconds: f64,
    pub requests: usize,
    /// Valid requests answered 5xx other than a 503 shed (must be 0).
    pub server_errors: usize,
    /// Valid requests shed with 503 and `Retry-After` while every heavy slot was busy.
    pub shed: usize,
    /// Valid requests that failed at the connection (must be 0).
    pub connection_errors: usize,
    pub hostile: usize,
    /// Hostile requests answered with anything but a 4xx (must be 0).
    pub hostile_not_refused: usize,
    pub adds_acknowledged: usize,
    pub deletes_acknowledged: usize,
    /// Acknowledged writes not visible at the end (must be 0).
    pub writes_lost: usize,
    /// Before any load.
    pub rss_start_mib: f64,
    /// After the first tenth of the run (caches, thread stacks and allocator arenas warm).
    pub rss_warm_mib: f64,
    pub rss_end_mib: f64,
    pub rss_peak_mib: f64,
    /// (seconds into the run, resident MiB), every 10 s.
    pub rss_samples: Vec<(f64, f64)>,
    /// Examples of what went wrong, a few of each kind.
    pub problems: Vec<String>,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.server_errors == 0
            && self.connection_errors == 0
            && self.hostile_not_refused == 0
            && self.writes_lost == 0
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Resident and peak resident memory of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Client {
    address: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(address: &str) -> Self {
        Client {
            address: address.to_string(),
            stream: None,
        }
    }

    fn send(&mut self, request: &LoadRequest, extra: &[String]) -> anyhow::Result<Reply> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let stream = TcpStream::connect(&self.address)
                    .with_context(|| format!("connecting to {}", self.address))?;
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                self.stream = Some(BufReader::new(stream));
            }
            let stream = self.stream.as_mut().expect("connected above");
            match exchange(stream, &self.address, request, extra) {
                Ok(reply) => {
                    let closing = reply
                        .headers
                        .iter()
                        .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
                    if closing {
                        self.stream = None;
                    }
                    return Ok(reply);
                }
                // A keep-alive connection the server closed while idle: once more, fresh.
                Err(e) if attempt == 0 => {
                    self.stream = None;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        bail!("unreachable")
    }
}

/// Waits for the write task a 202 reply names; its report when it is done (a failed one is
/// noted as a problem).
fn follow(
    tally: &Tally,
    client: &mut Client,
    what: &str,
    queued: &Reply,
) -> Option<serde_json::Value> {
    let report: serde_json::Value = serde_json::from_slice(&queued.body).ok()?;
    let id = report["id"].as_str()?;
    let path = format!("/api/tasks/{id}?wait=20");
    for _ in 0..15 {
        let reply = tally.valid(what, client.send(&get(&path, SOAK_ADMIN_KEY), &[]))?;
        let report: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
        match report["state"].as_str() {
            Some("done") => return Some(report),
            Some("queued" | "running") => continue,
            _ => {
                tally.note(format!("{what}: task {id} ended {report}"));
                return None;
            }
        }
    }
    tally.note(format!("{what}: task {id} did not finish within 5 minutes"));
    None
}

fn get(path: &str, key: &str) -> LoadRequest {
    LoadRequest {
        method: "GET".into(),
        path: path.into(),
        content_type: None,
        body: Vec::new(),
        key: Some(key.into()),
    }
}

fn post_json(path: &str, body: serde_json::Value, key: &str) -> LoadRequest {
    LoadRequest {
        method: "POST".into(),
        path: path.into(),
        content_type: Some("application/json".into()),
        body: body.to_string().into_bytes(),
        key: Some(key.into()),
    }
}

/// A multipart body: text parts, then one file part.
fn multipart(texts: &[(&str, String)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "soakBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (name, value) in texts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, bytes)) = file {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"slice\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A 16-bit DeepLesion slice of soft tissue with one brighter round lesion.
fn lesion_slice(seed: usize) -> Vec<u8> {
    let side = 256;
    let (cx, cy) = (100.0 + (seed % 50) as f32, 120.0 + (seed % 30) as f32);
    let pixels: Vec<f32> = (0..side * side)
        .map(|i| {
            let (x, y) = ((i % side) as f32, (i / side) as f32);
            let r = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
            if r < 14.0 {
                90.0
            } else {
                40.0 + ((i * 7919 + seed) % 23) as f32
            }
        })
        .collect();
    lesion_search::imaging::encode_png16(side, side, &pixels)
}

/// Requests that must be refused with a 4xx, never crash or slow the server.
fn hostile_requests() -> Vec<(String, LoadRequest, Vec<String>)> {
    let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bomb.extend_from_slice(&40_000u32.to_be_bytes());
    bomb.extend_from_slice(&40_000u32.to_be_bytes());
    bomb.extend_from_slice(&[16, 0, 0, 0, 0, 0, 0, 0, 0]);
    bomb.extend_from_slice(&[0u8; 2048]);
    let (bomb_type, bomb_body) = multipart(&[], Some(("image", &bomb)));
    let keyless = |method: &str, path: &str| LoadRequest {
        method: method.into(),
        path: path.into(),
        content_type: None,
        body: Vec::new(),
        key: None,
    };
    let mut attacks = vec![
        (
            "nested query".into(),
            post_json(
                "/api/search",
                serde_json::json!({"text": format!("{}liver", "(".repeat(100_000))}),
                SOAK_READ_KEY,
            ),
            vec![],
        ),
        (
            "decompression bomb".into(),
            LoadRequest {
                method: "POST".into(),
                path: "/api/uploads".into(),
                content_type: Some(bomb_type),
                body: bomb_body,
                key: Some(SOAK_READ_KEY.into()),
            },
            vec![],
        ),
        (
            "percent-encoded delete without a key".into(),
            keyless("DELETE", "/%61pi/lesions/1"),
            vec![],
        ),
        (
            "delete with the read key".into(),
            LoadRequest {
                key: Some(SOAK_READ_KEY.into()),
                ..keyless("DELETE", "/api/%6Cesions/2")
            },
            vec![],
        ),
        (
            "metrics without a key".into(),
            keyless("GET", "/%6Detrics"),
            vec![],
        ),
        (
            "page a billion deep".into(),
            post_json(
                "/api/search",
                serde_json::json!({"text": "liver", "offset": 1_000_000_000u64}),
                SOAK_READ_KEY,
            ),
            vec![],
        ),
        (
            "an invented method".into(),
            LoadRequest {
                key: Some(SOAK_READ_KEY.into()),
                ..keyless("BREW", "/api/facets")
            },
            vec![],
        ),
    ];
    // Files whose codestream lies about its size (a JPEG Lossless SOF of 65000 x 65000 once
    // aborted the server), a deflated frame past its declared size, 300,000 empty elements.
    let lies = lesion_search::imaging::lies::lying_images();
    for wanted in [
        "jpeg-1.2.840.10008.1.2.4.70",
        "jpeg-1.2.840.10008.1.2.4.50",
        "j2k-1.2.840.10008.1.2.4.90",
        "deflated-frame-bomb",
        "element-bomb-300k",
    ] {
        // A renamed sample must fail the soak loudly, not drop its attack.
        let lie = lies
            .iter()
            .find(|l| l.name.starts_with(wanted))
            .unwrap_or_else(|| panic!("imaging::lies has no sample named {wanted}*"));
        let (content_type, body) = multipart(&[], Some(("image", &lie.bytes)));
        attacks.push((
            format!("lying image {}", lie.name),
            LoadRequest {
                method: "POST".into(),
                path: "/api/uploads".into(),
                content_type: Some(content_type),
                body,
                key: Some(SOAK_READ_KEY.into()),
            },
            vec![],
        ));
    }
    attacks.extend([
        (
            "a context crop of 0 mm (once a thread spinning for ever)".into(),
            get("/api/lesions/1/image?around_mm=0&box=1", SOAK_READ_KEY),
            vec![],
        ),
        (
            "a field query on no text field".into(),
            post_json(
                "/api/search",
                serde_json::json!({"text": "report:*"}),
                SOAK_READ_KEY,
            ),
            vec![],
        ),
        (
            "JSON sent as text/plain (a cross-site simple request)".into(),
            LoadRequest {
                content_type: Some("text/plain".into()),
                ..post_json(
                    "/api/search",
                    serde_json::json!({"text": "liver"}),
                    SOAK_READ_KEY,
                )
            },
            vec![],
        ),
        (
            "a search from another site's page".into(),
            post_json(
                "/api/search",
                serde_json::json!({"text": "liver"}),
                SOAK_READ_KEY,
            ),
            vec![
                "Origin: http://evil.example".into(),
                "Sec-Fetch-Site: cross-site".into(),
            ],
        ),
        (
            "a search from a sandboxed frame (Origin: null)".into(),
            post_json(
                "/api/search",
                serde_json::json!({"text": "liver"}),
                SOAK_READ_KEY,
            ),
            vec!["Origin: null".into()],
        ),
        (
            "an add whose spacing is 1e30 mm (once a writer held for ever)".into(),
            {
                let slice = lesion_slice(7);
                let (content_type, body) = multipart(
                    &[
                        ("box", "90,110,130,150".into()),
                        ("patient", "990999".into()),
                        ("study", "1".into()),
                        ("spacing_mm", "1e30".into()),
                    ],
                    Some(("image", &slice)),
                );
                LoadRequest {
                    method: "POST".into(),
                    path: "/api/lesions".into(),
                    content_type: Some(content_type),
                    body,
                    key: Some(SOAK_ADMIN_KEY.into()),
                }
            },
            vec![],
        ),
    ]);
    attacks
}

/// Sends a JSON search one byte a second, as a slow-loris client would: the server must cut
/// it off with a 4xx at its body deadline instead of holding the connection for ever.
/// Returns the status it answered (`None` when `stop` came first), or an error when it never
/// answered within `patience`.
fn trickle_json(
    address: &str,
    patience: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Option<u16>> {
    let body = serde_json::json!({"text": "liver lesion ".repeat(40)}).to_string();
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_millis(50)))?;
    write!(
        stream,
        "POST /api/search HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {SOAK_READ_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    let started = Instant::now();
    let mut reply = Vec::new();
    for byte in body.bytes() {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if started.elapsed() > patience {
            break;
        }
        if stream.write_all(&[byte]).is_err() {
            break;
        }
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(1) {
            let mut buffer = [0u8; 512];
            match std::io::Read::read(&mut stream, &mut buffer) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buffer[..n]),
                Err(_) => {}
            }
            if !reply.is_empty() {
                break;
            }
        }
        if !reply.is_empty() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| anyhow!("no answer to a trickled body within {patience:?}"))
}

#[derive(Default)]
struct Tally {
    requests: AtomicUsize,
    server_errors: AtomicUsize,
    shed: AtomicUsize,
    connection_errors: AtomicUsize,
    hostile: AtomicUsize,
    hostile_not_refused: AtomicUsize,
    problems: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, problem: String) {
        if let Ok(mut problems) = self.problems.lock() {
            if problems.len() < 20 {
                problems.push(problem);
            }
        }
    }

    /// Counts a valid request's outcome; returns the reply when it came back 2xx.
    fn valid(&self, what: &str, outcome: anyhow::Result<Reply>) -> Option<Reply> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(reply) if reply.status < 300 => Some(reply),
            Ok(reply) if reply.status == 503 => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                None
            }
            Ok(reply) if reply.status >= 500 => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
                self.note(format!(
                    "{what}: {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ));
                None
            }
            Ok(reply) => {
                self.note(format!(
                    "{what}: unexpected {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ));
                None
            }
            Err(e) => {
                self.connection_errors.fetch_add(1, Ordering::Relaxed);
                self.note(format!("{what}: {e:#}"));
                None
            }
        }
    }
}

/// Options of one soak.
pub struct SoakOptions {
    pub index: PathBuf,
    pub duration: Duration,
    /// Client threads sending valid reads.
    pub readers: usize,
    /// Seconds between admin writes.
    pub write_every: Duration,
}

/// Runs the soak; `server_exe` is the `lesion-web` binary to start.
pub fn run(server_exe: &Path, options: &SoakOptions) -> anyhow::Result<SoakReport> {
    let work = tempfile_dir()?;
    let index = work.join("index");
    copy_dir(&options.index, &index)
        .with_context(|| format!("copying {}", options.index.display()))?;
    let port = free_port()?;
    let address = format!("127.0.0.1:{port}");
    let server = Server(
        Command::new(server_exe)
            .args(["--index", index.to_str().unwrap_or_default()])
            .args(["--listen", &address])
            .env("LESION_WEB_READ_KEY", SOAK_READ_KEY)
            .env("LESION_WEB_ADMIN_KEY", SOAK_ADMIN_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting lesion-web")?,
    );
    let pid = server.0.id();
    let mut probe = Client::new(&address);
    let started = Instant::now();
    let facets = loop {
        match probe.send(&get("/api/facets", SOAK_READ_KEY), &[]) {
            Ok(reply) if reply.status == 200 => break reply,
            _ if started.elapsed() > Duration::from_secs(120) => {
                bail!("the server did not answer within 120 s")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let facets: serde_json::Value = serde_json::from_slice(&facets.body)?;
    let lesions = facets["total"].as_u64().unwrap_or(0) as usize;
    if lesions < 4 {
        bail!("the index has {lesions} lesions; the soak needs a few");
    }
    // An 8-bit rendering of a stored lesion, to search with as an upload.
    let image = probe
        .send(
            &get("/api/lesions/0/image?window=soft&size=256", SOAK_READ_KEY),
            &[],
        )?
        .body;
    let (rss_start, _) = memory_mib(pid);

    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    let adds: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let added = AtomicUsize::new(0);
    let deletes: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let soak_started = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    std::thread::scope(|scope| {
        for reader in 0..options.readers {
            let (tally, stop, address, image) = (&tally, &stop, &address, &image);
            scope.spawn(move || {
                let mut client = Client::new(address);
                let phrases = [
                    "enlarged lymph node",
                    "liver lesion",
                    "lung nodule",
                    "renal cyst",
                ];
                let mut n = reader;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (what, request) = match n % 5 {
                        0 => (
                            "text search",
                            post_json(
                                "/api/search",
                                serde_json::json!({"text": phrases[n % phrases.len()], "k": 20}),
                                SOAK_READ_KEY,
                            ),
                        ),
                        1 => (
                            "more like this",
                            get(
                                &format!("/api/lesions/{}/similar?k=10", n % lesions),
                                SOAK_READ_KEY,
                            ),
                        ),
                        2 => {
                            let (content_type, body) = multipart(
                                &[("box", "100,100,160,160".into()), ("k", "10".into())],
                                Some(("image", image)),
                            );
                            (
                                "image search",
                                LoadRequest {
                                    method: "POST".into(),
                                    path: "/api/search".into(),
                                    content_type: Some(content_type),
                                    body,
                                    key: Some(SOAK_READ_KEY.into()),
                                },
                            )
                        }
                        3 => (
                            "export",
                            post_json(
                                "/api/export",
                                serde_json::json!({"format": "csv", "limit": 200}),
                                SOAK_READ_KEY,
                            ),
                        ),
                        _ => (
                            "lesion detail",
                            get(&format!("/api/lesions/{}", n % lesions), SOAK_READ_KEY),
                        ),
                    };
                    let outcome = client.send(&request, &[]);
                    // A deleted lesion's id answers 404: valid, not an error.
                    if let Ok(reply) = &outcome {
                        if reply.status == 404 {
                            tally.requests.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    tally.valid(what, outcome);
                }
            });
        }
        {
            let (tally, stop, address) = (&tally, &stop, &address);
            scope.spawn(move || {
                let mut client = Client::new(address);
                let attacks = hostile_requests();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (what, request, extra) = &attacks[n % attacks.len()];
                    n += 1;
                    tally.hostile.fetch_add(1, Ordering::Relaxed);
                    match client.send(request, extra) {
                        Ok(reply) if (400..500).contains(&reply.status) => {}
                        Ok(reply) => {
                            tally.hostile_not_refused.fetch_add(1, Ordering::Relaxed);
                            tally.note(format!("hostile {what}: answered {}", reply.status));
                        }
                        Err(e) => {
                            tally.hostile_not_refused.fetch_add(1, Ordering::Relaxed);
                            tally.note(format!("hostile {what}: {e:#}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
        }
        {
            // Slow-loris bodies, one at a time, for as long as the soak runs.
            let (tally, stop, address) = (&tally, &stop, &address);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = trickle_json(address, Duration::from_secs(90), stop);
                    if matches!(outcome, Ok(None)) {
                        break;
                    }
                    tally.hostile.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Ok(None) => {}
                        Ok(Some(status)) if (400..500).contains(&status) => {}
                        Ok(Some(status)) => {
                            tally.hostile_not_refused.fetch_add(1, Ordering::Relaxed);
                            tally.note(format!("hostile trickled JSON: answered {status}"));
                        }
                        Err(e) => {
                            tally.hostile_not_refused.fetch_add(1, Ordering::Relaxed);
                            tally.note(format!("hostile trickled JSON: {e:#}"));
                        }
                    }
                }
            });
        }
        {
            let (tally, stop, address, adds, deletes, added) =
                (&tally, &stop, &address, &adds, &deletes, &added);
            let every = options.write_every;
            scope.spawn(move || {
                let mut client = Client::new(address);
                let mut n = 0usize;
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if last.elapsed() < every {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    last = Instant::now();
                    n += 1;
                    if n % 2 == 1 {
                        let slice = lesion_slice(n);
                        let (content_type, body) = multipart(
                            &[
                                ("box", "90,110,130,150".into()),
                                ("patient", (900_000 + n).to_string()),
                                ("study", "1".into()),
                                ("spacing_mm", "0.8".into()),
                                ("type", "liver".into()),
                                ("report", "soak test lesion in the liver".into()),
                            ],
                            Some(("image", &slice)),
                        );
                        let request = LoadRequest {
                            method: "POST".into(),
                            path: "/api/lesions".into(),
                            content_type: Some(content_type),
                            body,
                            key: Some(SOAK_ADMIN_KEY.into()),
                        };
                        let queued = tally.valid("admin add", client.send(&request, &[]));
                        if let Some(done) =
                            queued.and_then(|r| follow(tally, &mut client, "admin add", &r))
                        {
                            added.fetch_add(1, Ordering::Relaxed);
                            if let (Some(key), Ok(mut adds)) =
                                (done["result"]["key"].as_str(), adds.lock())
                            {
                                adds.push(key.to_string());
                            }
                        }
                    } else {
                        // Delete the oldest lesion this soak added, or an original one.
                        let victim = adds
                            .lock()
                            .ok()
                            .and_then(|mut adds| (!adds.is_empty()).then(|| adds.remove(0)))
                            .unwrap_or_else(|| (lesions - 1 - n / 2 % lesions).to_string());
                        let request = LoadRequest {
                            method: "DELETE".into(),
                            path: format!("/api/lesions/{}", victim.replace('#', "%23")),
                            content_type: None,
                            body: Vec::new(),
                            key: Some(SOAK_ADMIN_KEY.into()),
                        };
                        let queued = tally.valid("admin delete", client.send(&request, &[]));
                        if queued
                            .and_then(|r| follow(tally, &mut client, "admin delete", &r))
                            .is_some()
                        {
                            if let Ok(mut deletes) = deletes.lock() {
                                deletes.push(victim);
                            }
                        }
                    }
                }
            });
        }
        let mut next_sample = Duration::ZERO;
        while soak_started.elapsed() < options.duration {
            if soak_started.elapsed() >= next_sample {
                samples.push((soak_started.elapsed().as_secs_f64(), memory_mib(pid).0));
                next_sample += Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let seconds = soak_started.elapsed().as_secs_f64();
    let (rss_end, rss_peak) = memory_mib(pid);
    let rss_warm = samples
        .iter()
        .find(|(at, _)| *at >= seconds / 10.0)
        .map_or(rss_end, |(_, mib)| *mib);

    // Every acknowledged write is visible: adds answer, deletes are gone.
    let mut lost = 0;
    let mut problems = tally.problems.lock().map(|p| p.clone()).unwrap_or_default();
    let adds = adds.into_inner().unwrap_or_default();
    let deletes = deletes.into_inner().unwrap_or_default();
    for key in &adds {
        let path = format!("/api/lesions/{}", key.replace('#', "%23"));
        let status = probe.send(&get(&path, SOAK_READ_KEY), &[])?.status;
        if status != 200 {
            lost += 1;
            problems.push(format!("added {key} answers {status}"));
        }
    }
    for key in &deletes {
        let path = format!("/api/lesions/{}", key.replace('#', "%23"));
        let status = probe.send(&get(&path, SOAK_READ_KEY), &[])?.status;
        if status != 404 {
            lost += 1;
            problems.push(format!("deleted {key} answers {status}"));
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
    Ok(SoakReport {
        seconds,
        requests: tally.requests.load(Ordering::Relaxed),
        server_errors: tally.server_errors.load(Ordering::Relaxed),
        shed: tally.shed.load(Ordering::Relaxed),
        connection_errors: tally.connection_errors.load(Ordering::Relaxed),
        hostile: tally.hostile.load(Ordering::Relaxed),
        hostile_not_refused: tally.hostile_not_refused.load(Ordering::Relaxed),
        adds_acknowledged: added.load(Ordering::Relaxed),
        deletes_acknowledged: deletes.len(),
        writes_lost: lost,
        rss_start_mib: rss_start,
        rss_warm_mib: rss_warm,
        rss_end_mib: rss_end,
        rss_peak_mib: rss_peak,
        rss_samples: samples,
        problems,
    })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "lesion-soak-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .map_err(|e| anyhow!("no free port: {e}"))?
        .port())
}
