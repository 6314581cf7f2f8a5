//! The HTTP layer against other sites' pages and hostile clients: cross-site and
//! cross-origin browser requests, JSON under other media types, bodies trickled or piled up
//! past what the server may hold, `Expect: 100-continue` with an oversized length, HEAD.
//! Cases the test framework cannot send (a slow body, an `Expect` handshake) go over a real
//! TCP socket to the server `lesion-web` runs ([`lesion_web::server`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::test as atest;
use actix_web::web;
use lesion_web::api::ROUTES;
use lesion_web::{app, AppState, Config};
use serde_json::json;

mod common;
use common::*;

const HOST: &str = "localhost:8080";
const OWN: &str = "http://localhost:8080";
const CORS: &str = "https://viewer.hospital.example";

fn keyed() -> Config {
    Config {
        read_key: Some(READ_KEY.into()),
        admin_key: Some(ADMIN_KEY.into()),
        ..Default::default()
    }
}

/// A search as a browser would send it, with `headers` added.
fn search(headers: &[(&str, &str)], key: Option<&str>) -> atest::TestRequest {
    let mut req = atest::TestRequest::post()
        .uri("/api/search")
        .insert_header(("Host", HOST))
        .set_json(json!({"text": "liver"}));
    for &(name, value) in headers {
        req = req.insert_header((name, value));
    }
    if let Some(key) = key {
        req = req.insert_header(("Authorization", format!("Bearer {key}")));
    }
    req
}

fn get(path: &str, headers: &[(&str, &str)], key: Option<&str>) -> atest::TestRequest {
    let mut req = atest::TestRequest::get()
        .uri(path)
        .insert_header(("Host", HOST));
    for &(name, value) in headers {
        req = req.insert_header((name, value));
    }
    if let Some(key) = key {
        req = req.insert_header(("Authorization", format!("Bearer {key}")));
    }
    req
}

#[actix_web::test]
async fn other_sites_pages_are_refused_with_and_without_keys() {
    for (mode, config, key) in [
        ("key-less", Config::default(), None),
        ("keyed", keyed(), Some(READ_KEY)),
    ] {
        let config = Config {
            cors_origin: Some(CORS.into()),
            ..config
        };
        let app = atest::init_service(app(state(config))).await;
        // Fetch metadata: only this origin's own pages, typed URLs and non-browsers pass.
        for (site, wanted) in [
            (Some("cross-site"), StatusCode::FORBIDDEN),
            (Some("same-site"), StatusCode::FORBIDDEN),
            (Some("CROSS-SITE"), StatusCode::FORBIDDEN),
            (Some("something-new"), StatusCode::FORBIDDEN),
            (Some("same-origin"), StatusCode::OK),
            (Some("none"), StatusCode::OK),
            (None, StatusCode::OK),
        ] {
            let headers: Vec<(&str, &str)> =
                site.map(|s| ("Sec-Fetch-Site", s)).into_iter().collect();
            for req in [
                get("/api/facets", &headers, key),
                get("/api/lesions/0/thumbnail", &headers, key),
                get("/healthz", &headers, None),
                search(&headers, key),
            ] {
                let (status, body) = call(&app, req).await;
                assert_eq!(status, wanted, "{mode}, Sec-Fetch-Site {site:?}");
                if status == StatusCode::FORBIDDEN {
                    let error = &json_of(&body)["error"];
                    assert_eq!(error["field"], "Sec-Fetch-Site", "{mode}: {error}");
                    assert_eq!(error["code"], "cross_site");
                }
            }
        }
        // Origin: only this server's own (scheme and Host) or the configured CORS origin.
        for (origin, host, wanted) in [
            ("null", HOST, StatusCode::FORBIDDEN),
            ("http://localhost:8081", HOST, StatusCode::FORBIDDEN),
            ("https://localhost:8080", HOST, StatusCode::FORBIDDEN),
            ("http://127.0.0.1:8080", HOST, StatusCode::FORBIDDEN),
            ("http://evil.example", HOST, StatusCode::FORBIDDEN),
            (
                "http://localhost:8080.evil.example",
                HOST,
                StatusCode::FORBIDDEN,
            ),
            (
                "https://viewer.hospital.example.evil",
                HOST,
                StatusCode::FORBIDDEN,
            ),
            (OWN, HOST, StatusCode::OK),
            ("http://LOCALHOST:8080", HOST, StatusCode::OK),
            (OWN, "LocalHost:8080", StatusCode::OK),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", StatusCode::OK),
            ("http://localhost", "localhost:80", StatusCode::OK),
        ] {
            let (status, body) = call(
                &app,
                search(&[("Origin", origin)], key).insert_header(("Host", host)),
            )
            .await;
            assert_eq!(status, wanted, "{mode}: Origin {origin}, Host {host}");
            if status == StatusCode::FORBIDDEN {
                assert_eq!(error_field(&body), "Origin", "{mode}: Origin {origin}");
            }
        }
        // Behind a TLS-terminating proxy the page's Origin (https, the public name) is not
        // the scheme and Host this server sees; the browser's own verdict decides.
        let (status, body) = call(
            &app,
            search(
                &[
                    ("Origin", "https://lesions.hospital.example"),
                    ("Sec-Fetch-Site", "same-origin"),
                ],
                key,
            )
            .insert_header(("Host", HOST)),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{mode}: the UI behind a proxy: {}",
            String::from_utf8_lossy(&body)
        );
        // The own origin wins over a cross-site Sec-Fetch-Site only when it is the CORS one.
        let res = atest::call_service(
            &app,
            search(&[("Origin", CORS), ("Sec-Fetch-Site", "cross-site")], key).to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{mode}: the CORS origin");
        assert_eq!(
            res.headers().get("access-control-allow-origin").unwrap(),
            CORS
        );
        let (status, _) = call(
            &app,
            search(&[("Origin", OWN), ("Sec-Fetch-Site", "cross-site")], key),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{mode}: lying fetch metadata"
        );
        // A link from another site opens the UI's page; nothing else comes along.
        let navigate = [
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-Dest", "document"),
        ];
        let res = atest::call_service(&app, get("/", &navigate, None).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "{mode}: a link to the UI");
        let policy = res
            .headers()
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        let (status, _) = call(&app, get("/api/lesions/0", &navigate, key)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: a link to data");
        let framed = [
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-Dest", "iframe"),
        ];
        let (status, _) = call(&app, get("/", &framed, None)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: the UI in a frame");
        let image = [
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "no-cors"),
            ("Sec-Fetch-Dest", "image"),
        ];
        let (status, _) = call(&app, get("/api/lesions/0/image", &image, key)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: <img src>");
        // A preflight from another origin gets no CORS answer.
        let (status, _) = call(
            &app,
            atest::TestRequest::default()
                .method(actix_web::http::Method::OPTIONS)
                .uri("/api/search")
                .insert_header(("Host", HOST))
                .insert_header(("Origin", "http://evil.example"))
                .insert_header(("Access-Control-Request-Method", "POST")),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: a foreign preflight");
    }
}

#[actix_web::test]
async fn the_uis_own_requests_pass() {
    // What the page's fetch() calls carry: same-origin metadata, and Origin on POST.
    let app = atest::init_service(app(state(Config::default()))).await;
    let same = [
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Mode", "cors"),
    ];
    for path in ["/", "/assets/app.js", "/assets/app.css", "/api/facets"] {
        let (status, _) = call(&app, get(path, &same, None)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (status, _) = call(
        &app,
        search(
            &[
                ("Sec-Fetch-Site", "same-origin"),
                ("Origin", OWN),
                ("Content-Type", "application/json"),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn json_is_only_read_as_application_json() {
    let app = atest::init_service(app(state(Config::default()))).await;
    let post = |path: &str, content_type: Option<&str>| {
        let body = if path.ends_with("export") {
            json!({"query": {"text": "liver"}, "limit": 5})
        } else {
            json!({"text": "liver"})
        };
        let mut req = atest::TestRequest::post()
            .uri(path)
            .set_payload(body.to_string());
        if let Some(content_type) = content_type {
            req = req.insert_header(("Content-Type", content_type));
        }
        req
    };
    for path in ["/api/search", "/api/export"] {
        for content_type in [
            Some("text/plain"),
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("application/json; charset=latin1"),
            Some("application/jsonx"),
            None,
        ] {
            let (status, reply) = call(&app, post(path, content_type)).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type:?}"
            );
            assert_eq!(error_field(&reply), "Content-Type");
            assert_eq!(json_of(&reply)["error"]["code"], "unsupported_media_type");
        }
        for content_type in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=\"UTF-8\"",
        ] {
            let (status, reply) = call(&app, post(path, Some(content_type))).await;
            assert!(
                status == StatusCode::OK,
                "{path} {content_type}: {status} {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
    // Form routes take forms only; the media type is judged on the route matched.
    for path in ["/api/uploads", "/api/%75ploads"] {
        let (status, reply) = call(&app, post(path, Some("application/json"))).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
        assert_eq!(error_field(&reply), "Content-Type");
    }
    let (status, _) = call(&app, post("/api/%73earch", Some("text/plain"))).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "/api/%73earch");
}

#[actix_web::test]
async fn head_answers_wherever_get_does() {
    let app = atest::init_service(app(state(Config::default()))).await;
    let mut paths: Vec<String> = ROUTES
        .iter()
        .filter(|route| route.method == actix_web::http::Method::GET)
        .filter(|route| route.access != lesion_web::access::Access::Admin)
        .map(|route| {
            route
                .path
                .replace("{id}", "0")
                .replace("{upload}", "no-such-upload")
        })
        .collect();
    paths.extend(["/", "/assets/app.js", "/assets/app.css"].map(String::from));
    for path in &paths {
        let got = atest::call_service(&app, atest::TestRequest::get().uri(path).to_request()).await;
        let head = atest::call_service(
            &app,
            atest::TestRequest::default()
                .method(actix_web::http::Method::HEAD)
                .uri(path)
                .to_request(),
        )
        .await;
        assert_eq!(head.status(), got.status(), "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type"),
            got.headers().get("content-type"),
            "HEAD {path}"
        );
    }
    // A route with no GET still has no HEAD.
    let (status, _) = call(
        &app,
        atest::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/api/export"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---- over a real socket ----

/// A real server (the one `lesion-web` runs) on a free loopback port, on its own thread.
fn serve(config: Config) -> (u16, web::Data<AppState>) {
    let state = state(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = state.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            lesion_web::server(served, listener, 2)
                .unwrap()
                .await
                .unwrap();
        })
    });
    wait_for_health(port);
    (port, state)
}

fn wait_for_health(port: u16) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(reply) = exchange(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ) {
            if reply.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not answer /healthz within 30 s");
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Everything the server sends until it closes (or 30 s pass).
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return reply,
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
        }
    }
}

fn exchange(port: u16, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    Ok(read_all(&mut stream))
}

/// The status of a raw reply.
fn status_of(reply: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(reply);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {text:?}"))
}

/// Head and body of a raw reply.
fn split_reply(reply: &[u8]) -> (String, Vec<u8>) {
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    (
        String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase(),
        reply[end + 4..].to_vec(),
    )
}

/// Reads one reply's head (up to the blank line) without waiting for the connection to end.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn trickled_bodies_of_every_kind_are_cut_at_the_deadline() {
    let deadline = Duration::from_secs(1);
    let (port, _state) = serve(Config {
        body_timeout: deadline,
        ..Default::default()
    });
    let heads = [
        "POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n",
        "POST /api/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 400\r\n\r\n",
        "POST /api/export HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    // Many slow clients at once: each is cut off, and the server answers others meanwhile.
    let mut slow = Vec::new();
    for i in 0..30 {
        let head = heads[i % heads.len()];
        let mut stream = connect(port);
        stream.write_all(head.as_bytes()).unwrap();
        slow.push((head, stream));
    }
    let writers: Vec<_> = slow
        .iter()
        .map(|(head, stream)| {
            let mut stream = stream.try_clone().unwrap();
            let chunked = head.contains("chunked");
            std::thread::spawn(move || {
                // One byte every 200 ms for up to 20 s: far past the deadline.
                for _ in 0..100 {
                    let byte: &[u8] = if chunked { b"1\r\n{\r\n" } else { b"{" };
                    if stream.write_all(byte).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    let health = exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        status_of(&health),
        200,
        "healthz while slow bodies are held"
    );
    for (head, mut stream) in slow {
        let reply = read_all(&mut stream);
        assert_eq!(status_of(&reply), 408, "{head}");
        let (reply_head, body) = split_reply(&reply);
        assert!(reply_head.contains("connection: close"), "{reply_head}");
        assert_eq!(error_field(&body), "body");
    }
    for writer in writers {
        writer.join().unwrap();
    }
}

#[test]
fn bodies_past_the_in_flight_cap_get_503_until_the_holder_is_done() {
    let (port, state) = serve(Config {
        max_body_bytes_in_flight: 1 << 20,
        max_upload_bytes: 4 << 20,
        ..Default::default()
    });
    let upload_head = |length: usize| {
        format!("POST /api/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
    };
    // Declared lengths reserve nothing until their bytes come (found by attack: idle
    // connections declaring the cap between them locked every body route out).
    let mut idle = connect(port);
    idle.write_all(upload_head(1_000_000).as_bytes()).unwrap();
    let (content_type, small) = multipart(&[("image", Some("a.png"), b"not an image")]);
    let mut small_upload = format!("POST /api/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", small.len()).into_bytes();
    small_upload.extend_from_slice(&small);
    let reply = exchange(port, &small_upload).unwrap();
    assert_eq!(
        status_of(&reply),
        422,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // A big upload, begun and not finished: what has arrived is reserved.
    let mut holder = connect(port);
    holder.write_all(upload_head(950_000).as_bytes()).unwrap();
    holder
        .write_all(b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\n")
        .unwrap();
    holder.write_all(&vec![0u8; 900_000]).unwrap();
    let started = Instant::now();
    while state.bodies_in_flight().bytes() < 900_000 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never reserved"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A body that does not fit beside it: refused once its bytes arrive.
    let mut request = upload_head(200_000).into_bytes();
    request.extend_from_slice(&vec![b'a'; 200_000]);
    let reply = exchange(port, &request).unwrap();
    assert_eq!(status_of(&reply), 503);
    let (head, body) = split_reply(&reply);
    assert!(head.contains("retry-after:"), "{head}");
    assert_eq!(json_of(&body)["error"]["code"], "busy");
    // A chunked body: refused once what has arrived does not fit.
    let mut chunked = connect(port);
    chunked
        .write_all(b"POST /api/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut writer = chunked.try_clone().unwrap();
    // Written aside: the server stops reading once the chunk does not fit.
    let writing = std::thread::spawn(move || {
        let chunk = vec![b'a'; 300_000];
        let _ = writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = writer.write_all(&chunk);
        let _ = writer.write_all(b"\r\n");
    });
    let reply = read_all(&mut chunked);
    writing.join().unwrap();
    assert_eq!(
        status_of(&reply),
        503,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(split_reply(&reply).0.contains("retry-after:"));
    // The holder goes away: its reservation is released, and the next upload is read.
    drop(holder);
    drop(idle);
    let started = Instant::now();
    while state.bodies_in_flight().bytes() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} bytes still reserved",
            state.bodies_in_flight().bytes()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (content_type, body) = multipart(&[("image", Some("a.png"), b"not an image")]);
    let mut request = format!("POST /api/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(&body);
    let reply = exchange(port, &request).unwrap();
    assert_eq!(
        status_of(&reply),
        422,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(state.bodies_in_flight().bytes(), 0);
}

#[test]
fn expect_continue_with_an_oversized_length_gets_413_not_100() {
    let config = Config::default();
    let max = config.max_body_bytes();
    let (port, _state) = serve(config);
    let mut stream = connect(port);
    stream
        .write_all(
            format!("POST /api/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", max + 1)
                .as_bytes(),
        )
        .unwrap();
    let reply = read_all(&mut stream);
    assert_eq!(
        status_of(&reply),
        413,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let (head, body) = split_reply(&reply);
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(error_field(&body), "Content-Length");
    // Without Expect, the same length is refused before its body is read.
    let mut stream = connect(port);
    stream
        .write_all(
            format!("POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{", max + 1)
                .as_bytes(),
        )
        .unwrap();
    let reply = read_all(&mut stream);
    assert_eq!(
        status_of(&reply),
        413,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(error_field(&split_reply(&reply).1), "Content-Length");
    // Within the cap the client is told to go on, and its body is read.
    let (content_type, body) = multipart(&[("image", Some("a.png"), b"not an image")]);
    let mut stream = connect(port);
    stream
        .write_all(
            format!("POST /api/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", body.len())
                .as_bytes(),
        )
        .unwrap();
    let first = read_head(&mut stream);
    assert!(first.starts_with("HTTP/1.1 100"), "{first}");
    stream.write_all(&body).unwrap();
    let reply = read_all(&mut stream);
    assert_eq!(
        status_of(&reply),
        422,
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[test]
fn head_sends_headers_without_a_body_over_the_wire() {
    let (port, _state) = serve(Config::default());
    for path in [
        "/",
        "/assets/app.js",
        "/healthz",
        "/api/facets",
        "/api/openapi.json",
        "/api/lesions/0",
        "/api/lesions/0/thumbnail",
    ] {
        let get = exchange(
            port,
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let head = exchange(
            port,
            format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(status_of(&head), 200, "HEAD {path}");
        let (get_head, get_body) = split_reply(&get);
        let (head_head, head_body) = split_reply(&head);
        assert!(!get_body.is_empty(), "GET {path}");
        assert!(
            head_body.is_empty(),
            "HEAD {path} sent {} bytes",
            head_body.len()
        );
        let content_type = |head: &str| {
            head.lines()
                .find(|l| l.starts_with("content-type:"))
                .map(String::from)
        };
        assert_eq!(content_type(&head_head), content_type(&get_head), "{path}");
    }
}

#[test]
fn a_trickled_request_head_is_cut_at_the_header_timeout() {
    let (port, _state) = serve(Config {
        header_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    let mut stream = connect(port);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b"X-Slow: y\r\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let reply = read_all(&mut stream);
    assert_eq!(
        status_of(&reply),
        408,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    trickle.join().unwrap();
}
