//! `lesion-bench load`, a small HTTP/1.1 load generator: keep-alive connections on
//! threads, each sending one request after another for a fixed time; reports throughput
//! and latency percentiles. Enough for loopback benchmarks without another tool. The
//! soak sends its requests with [`exchange`] too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// The server, host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    address: String,
    /// text (a report phrase), lesion (more like this), image (an uploaded slice), or a
    /// path to GET.
    #[arg(long, default_value = "text")]
    kind: String,
    /// The slice for `--kind image` and its box.
    #[arg(long)]
    image: Option<PathBuf>,
    #[arg(long = "box", default_value = "200,200,260,260")]
    bbox: String,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Print JSON instead of a line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let request = request_of(&args)?;
    let report = drive(
        &args.address,
        &request,
        args.connections,
        Duration::from_secs(args.seconds),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} {}: {} requests in {:.1} s at {} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} errors",
            request.method, args.kind, report.requests, report.seconds, report.connections,
            report.requests_per_second, report.p50_ms, report.p99_ms, report.max_ms, report.errors
        );
    }
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The one request `--kind` names, with the read key of `LESION_WEB_READ_KEY` if set.
fn request_of(args: &Args) -> anyhow::Result<LoadRequest> {
    let key = std::env::var("LESION_WEB_READ_KEY").ok();
    let json = |body: serde_json::Value| LoadRequest {
        method: "POST".into(),
        path: "/api/search".into(),
        content_type: Some("application/json".into()),
        body: body.to_string().into_bytes(),
        key: key.clone(),
    };
    Ok(match args.kind.as_str() {
        "text" => json(serde_json::json!({"text": "enlarged lymph node", "k": 20})),
        "lesion" => json(serde_json::json!({"lesion": 7, "k": 20})),
        "image" => {
            let path = args
                .image
                .as_ref()
                .ok_or_else(|| anyhow!("--kind image needs --image FILE"))?;
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            image_search(&bytes, &args.bbox, key.clone())
        }
        path if path.starts_with('/') => LoadRequest {
            method: "GET".into(),
            path: path.into(),
            content_type: None,
            body: Vec::new(),
            key: key.clone(),
        },
        other => bail!("--kind: `{other}` is not text, lesion, image or a /path"),
    })
}

/// A multipart search with one uploaded slice and its box.
fn image_search(bytes: &[u8], bbox: &str, key: Option<String>) -> LoadRequest {
    let boundary = "lesionsearchload";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"box\"\r\n\r\n{bbox}\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"slice\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    LoadRequest {
        method: "POST".into(),
        path: "/api/search".into(),
        content_type: Some(format!("multipart/form-data; boundary={boundary}")),
        body,
        key,
    }
}

/// One request, sent again and again.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub connections: usize,
    pub seconds: f64,
    pub requests: usize,
    pub errors: usize,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn send(
    stream: &mut BufReader<TcpStream>,
    host: &str,
    request: &LoadRequest,
) -> anyhow::Result<u16> {
    exchange(stream, host, request, &[]).map(|reply| reply.status)
}

/// A response: status, the headers asked for, the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Sends one request on a keep-alive connection and reads the whole response (header names
/// in lower case). `extra` lines are added to the request head as they are.
pub fn exchange(
    stream: &mut BufReader<TcpStream>,
    host: &str,
    request: &LoadRequest,
    extra: &[String],
) -> anyhow::Result<Reply> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    if let Some(ct) = &request.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if let Some(key) = &request.key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let socket = stream.get_mut();
    socket.write_all(head.as_bytes())?;
    socket.write_all(&request.body)?;
    let mut status_line = String::new();
    stream.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {status_line:?}"))?;
    let mut length = None;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length = length.ok_or_else(|| anyhow!("response without Content-Length"))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Runs `connections` keep-alive clients against `address` for `duration`.
fn drive(
    address: &str,
    request: &LoadRequest,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadReport> {
    let socket = address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .next()
        .ok_or_else(|| anyhow!("{address} resolves to nothing"))?;
    let started = Instant::now();
    let outcomes: Vec<anyhow::Result<(Vec<f64>, usize)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|_| scope.spawn(move || one_client(socket, address, request, started + duration)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for outcome in outcomes {
        let (l, e) = outcome?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    Ok(LoadReport {
        connections,
        seconds,
        requests: latencies.len(),
        errors,
        requests_per_second: latencies.len() as f64 / seconds,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    })
}

/// One keep-alive connection sending `request` until `until`: the latencies of the
/// answers under 400 (ms) and the count of the others, reconnecting after a failure.
fn one_client(
    socket: SocketAddr,
    address: &str,
    request: &LoadRequest,
    until: Instant,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut stream = BufReader::new(
        TcpStream::connect(socket).with_context(|| format!("connecting to {socket}"))?,
    );
    stream.get_ref().set_nodelay(true)?;
    let mut latencies = Vec::new();
    let mut errors = 0;
    while Instant::now() < until {
        let t = Instant::now();
        match send(&mut stream, address, request) {
            Ok(status) if status < 400 => latencies.push(t.elapsed().as_secs_f64() * 1e3),
            Ok(_) => errors += 1,
            Err(_) => {
                errors += 1;
                stream = BufReader::new(TcpStream::connect(socket)?);
            }
        }
    }
    Ok((latencies, errors))
}
