//! The soak's hostile side: requests that must be refused with a 4xx (a bomb, keys and
//! paths that try to slip past access, lying images, values that once held a thread or a
//! writer, other sites' pages) and a slow-loris body, each sent by its own client thread.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::{get, lesion_slice, multipart, post_json, Client, Soak};
use super::{SOAK_ADMIN_KEY, SOAK_READ_KEY};
use crate::load::LoadRequest;

/// What a hostile request is, the request, and header lines added to its head.
type Attack = (String, LoadRequest, Vec<String>);

/// Requests that must be refused with a 4xx, never crash or slow the server.
fn hostile_requests() -> Vec<Attack> {
    let mut attacks = access_and_parsing_attacks();
    attacks.extend(lying_image_attacks());
    attacks.extend(guarded_value_attacks());
    attacks
}

/// Sends every hostile request in turn, 250 ms apart, until the soak stops; any answer
/// but a 4xx is counted and noted.
pub(super) fn send_attacks(soak: &Soak) {
    let tally = &soak.tally;
    let mut client = Client::new(soak.address);
    let attacks = hostile_requests();
    let mut n = 0;
    while !soak.stop.load(Ordering::Relaxed) {
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
}

/// Slow-loris bodies, one at a time, for as long as the soak runs.
pub(super) fn trickle_bodies(soak: &Soak) {
    let tally = &soak.tally;
    while !soak.stop.load(Ordering::Relaxed) {
        let outcome = trickle_json(soak.address, Duration::from_secs(90), &soak.stop);
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
}

/// Bombs, and requests that try to slip past access checks or the parsers.
fn access_and_parsing_attacks() -> Vec<Attack> {
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
    vec![
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
    ]
}

/// Files whose codestream lies about its size (a JPEG Lossless SOF of 65000 x 65000 once
/// aborted the server), a deflated frame past its declared size, 300,000 empty elements.
fn lying_image_attacks() -> Vec<Attack> {
    let lies = lesion_search::imaging::lies::lying_images();
    let mut attacks = Vec::new();
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
    attacks
}

/// Values that once held a thread or a writer, and requests another site's page could send.
fn guarded_value_attacks() -> Vec<Attack> {
    vec![
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
    ]
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
