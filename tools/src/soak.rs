//! `lesion-bench soak`: a server under mixed, sustained load for minutes, hostile requests
//! mixed in, writes every few seconds. It serves a private copy of the index from a child
//! `lesion-web` process (so its memory is measured alone) and reports what a maintainer must
//! know before exposing it: 5xx answers to valid requests (must be none), requests shed with
//! 503 while busy, resident memory at start, end and peak, hostile requests that were not
//! refused with a 4xx, and whether every acknowledged write is visible at the end.

mod hostile;

use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use crate::load::{exchange, LoadRequest, Reply};

#[derive(clap::Args)]
pub struct Args {
    /// The index to copy and serve.
    #[arg(long)]
    index: PathBuf,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Client threads sending valid reads.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Seconds between admin writes (adds and deletes alternate).
    #[arg(long, default_value_t = 3.0)]
    write_every_s: f64,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// The `lesion-web` binary to start (default: the one beside this binary, where cargo
    /// builds both).
    #[arg(long, value_name = "FILE")]
    server: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let server = match &args.server {
        Some(path) => path.clone(),
        None => lesion_web_beside_us()?,
    };
    let report = soak(
        &server,
        &SoakOptions {
            index: args.index,
            duration: Duration::from_secs_f64(args.minutes * 60.0),
            readers: args.readers,
            write_every: Duration::from_secs_f64(args.write_every_s),
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "soak {:.0} s: {} valid requests, {} answered 5xx, {} shed (503, Retry-After), {} connection errors; {} hostile, {} not refused; {} adds and {} deletes acknowledged, {} lost; server RSS {:.0} MiB at start, {:.0} warm, {:.0} at end, peak {:.0}",
            report.seconds, report.requests, report.server_errors, report.shed,
            report.connection_errors, report.hostile, report.hostile_not_refused,
            report.adds_acknowledged, report.deletes_acknowledged, report.writes_lost,
            report.rss_start_mib, report.rss_warm_mib, report.rss_end_mib, report.rss_peak_mib
        );
        for problem in &report.problems {
            println!("  {problem}");
        }
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `lesion-web` in the folder of the running binary: cargo builds every binary of the
/// workspace into one target folder.
fn lesion_web_beside_us() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the lesion-bench binary")?;
    Ok(exe.with_file_name(format!("lesion-web{}", std::env::consts::EXE_SUFFIX)))
}

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
struct SoakOptions {
    index: PathBuf,
    duration: Duration,
    /// Client threads sending valid reads.
    readers: usize,
    /// Seconds between admin writes.
    write_every: Duration,
}

/// What the client threads of one soak share.
struct Soak<'a> {
    address: &'a str,
    /// Lesions in the index when the soak began.
    lesions: usize,
    /// An 8-bit rendering of a stored lesion, to search with as an upload.
    image: &'a [u8],
    tally: Tally,
    stop: AtomicBool,
    writes: Writes,
}

/// The admin writes the server acknowledged.
#[derive(Default)]
struct Writes {
    /// Keys of the lesions added and not deleted since, oldest first.
    adds: Mutex<Vec<String>>,
    added: AtomicUsize,
    deletes: Mutex<Vec<String>>,
}

/// Runs the soak against a `server_exe` serving a copy of the index.
fn soak(server_exe: &Path, options: &SoakOptions) -> anyhow::Result<SoakReport> {
    let work = tempfile_dir()?;
    let index = work.join("index");
    copy_dir(&options.index, &index)
        .with_context(|| format!("copying {}", options.index.display()))?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let server = start_server(server_exe, &index, &address)?;
    let pid = server.0.id();
    let mut probe = Client::new(&address);
    let (lesions, image) = wait_until_serving(&mut probe)?;
    let (rss_start, _) = memory_mib(pid);

    let soak = Soak {
        address: &address,
        lesions,
        image: &image,
        tally: Tally::default(),
        stop: AtomicBool::new(false),
        writes: Writes::default(),
    };
    let (seconds, samples) = drive(&soak, options, pid);
    let (rss_end, rss_peak) = memory_mib(pid);
    let rss_warm = samples
        .iter()
        .find(|(at, _)| *at >= seconds / 10.0)
        .map_or(rss_end, |(_, mib)| *mib);

    let Soak { tally, writes, .. } = soak;
    let mut problems = tally.problems.lock().map(|p| p.clone()).unwrap_or_default();
    let adds = writes.adds.into_inner().unwrap_or_default();
    let deletes = writes.deletes.into_inner().unwrap_or_default();
    let lost = lost_writes(&mut probe, &adds, &deletes, &mut problems)?;
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
        adds_acknowledged: writes.added.load(Ordering::Relaxed),
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

/// Starts `lesion-web` over `index` on `address`, with the soak's keys.
fn start_server(exe: &Path, index: &Path, address: &str) -> anyhow::Result<Server> {
    let child = Command::new(exe)
        .args(["--index", index.to_str().unwrap_or_default()])
        .args(["--listen", address])
        .env("LESION_WEB_READ_KEY", SOAK_READ_KEY)
        .env("LESION_WEB_ADMIN_KEY", SOAK_ADMIN_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting lesion-web ({})", exe.display()))?;
    Ok(Server(child))
}

/// Waits up to 120 s for the server to answer; the lesions it serves and an 8-bit rendering
/// of lesion 0, to search with as an upload.
fn wait_until_serving(probe: &mut Client) -> anyhow::Result<(usize, Vec<u8>)> {
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
    let image = probe
        .send(
            &get("/api/lesions/0/image?window=soft&size=256", SOAK_READ_KEY),
            &[],
        )?
        .body;
    Ok((lesions, image))
}

/// Runs every client thread for the soak's duration while sampling the server's resident
/// memory every 10 s; the seconds it ran and the samples.
fn drive(soak: &Soak, options: &SoakOptions, pid: u32) -> (f64, Vec<(f64, f64)>) {
    let started = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    std::thread::scope(|scope| {
        for reader in 0..options.readers {
            scope.spawn(move || read(soak, reader));
        }
        scope.spawn(|| hostile::send_attacks(soak));
        scope.spawn(|| hostile::trickle_bodies(soak));
        scope.spawn(|| write(soak, options.write_every));
        let mut next_sample = Duration::ZERO;
        while started.elapsed() < options.duration {
            if started.elapsed() >= next_sample {
                samples.push((started.elapsed().as_secs_f64(), memory_mib(pid).0));
                next_sample += Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        soak.stop.store(true, Ordering::Relaxed);
    });
    (started.elapsed().as_secs_f64(), samples)
}

/// Phrases of the text searches.
const PHRASES: [&str; 4] = [
    "enlarged lymph node",
    "liver lesion",
    "lung nodule",
    "renal cyst",
];

/// One reader: valid reads back to back until the soak stops.
fn read(soak: &Soak, reader: usize) {
    let mut client = Client::new(soak.address);
    let mut n = reader;
    while !soak.stop.load(Ordering::Relaxed) {
        n += 1;
        let (what, request) = read_request(soak, n);
        let outcome = client.send(&request, &[]);
        // A deleted lesion's id answers 404: valid, not an error.
        if let Ok(reply) = &outcome {
            if reply.status == 404 {
                soak.tally.requests.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        soak.tally.valid(what, outcome);
    }
}

/// The `n`th read: a text search, more like this, an image search, an export and a
/// lesion's detail in turn.
fn read_request(soak: &Soak, n: usize) -> (&'static str, LoadRequest) {
    let lesions = soak.lesions;
    match n % 5 {
        0 => (
            "text search",
            post_json(
                "/api/search",
                serde_json::json!({"text": PHRASES[n % PHRASES.len()], "k": 20}),
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
                Some(("image", soak.image)),
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
    }
}

/// The writer: an admin write every `every`, adds and deletes in turn, each followed until
/// its task is done.
fn write(soak: &Soak, every: Duration) {
    let mut client = Client::new(soak.address);
    let mut n = 0usize;
    let mut last = Instant::now();
    while !soak.stop.load(Ordering::Relaxed) {
        if last.elapsed() < every {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        last = Instant::now();
        n += 1;
        if n % 2 == 1 {
            add(soak, &mut client, n);
        } else {
            delete(soak, &mut client, n);
        }
    }
}

/// Adds a generated liver lesion of a new patient; its key is kept when the task is done.
fn add(soak: &Soak, client: &mut Client, n: usize) {
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
    let tally = &soak.tally;
    let queued = tally.valid("admin add", client.send(&request, &[]));
    if let Some(done) = queued.and_then(|r| follow(tally, client, "admin add", &r)) {
        soak.writes.added.fetch_add(1, Ordering::Relaxed);
        if let (Some(key), Ok(mut adds)) = (done["result"]["key"].as_str(), soak.writes.adds.lock())
        {
            adds.push(key.to_string());
        }
    }
}

/// Deletes the oldest lesion this soak added, or an original one.
fn delete(soak: &Soak, client: &mut Client, n: usize) {
    let lesions = soak.lesions;
    let victim = soak
        .writes
        .adds
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
    let tally = &soak.tally;
    let queued = tally.valid("admin delete", client.send(&request, &[]));
    if queued
        .and_then(|r| follow(tally, client, "admin delete", &r))
        .is_some()
    {
        if let Ok(mut deletes) = soak.writes.deletes.lock() {
            deletes.push(victim);
        }
    }
}

/// Every acknowledged write must be visible: adds answer, deletes are gone. The count of
/// those that are not, each noted in `problems`.
fn lost_writes(
    probe: &mut Client,
    adds: &[String],
    deletes: &[String],
    problems: &mut Vec<String>,
) -> anyhow::Result<usize> {
    let mut lost = 0;
    for key in adds {
        let path = format!("/api/lesions/{}", key.replace('#', "%23"));
        let status = probe.send(&get(&path, SOAK_READ_KEY), &[])?.status;
        if status != 200 {
            lost += 1;
            problems.push(format!("added {key} answers {status}"));
        }
    }
    for key in deletes {
        let path = format!("/api/lesions/{}", key.replace('#', "%23"));
        let status = probe.send(&get(&path, SOAK_READ_KEY), &[])?.status;
        if status != 404 {
            lost += 1;
            problems.push(format!("deleted {key} answers {status}"));
        }
    }
    Ok(lost)
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
