//! The API under abuse while the pipeline works: a `cchc run` process
//! (real broker and database) takes a paced feed of events while clients
//! open 1,000 connections and send nothing, leave kept-alive connections
//! idle, read an event stream without ever reading it, send a 100 MB body
//! (announced, and chunked), send 10,000 requests with bad tokens, and
//! trickle a body a byte a second. Meanwhile `/health` is asked every 20 ms.
//!
//! Asserted: every abusive request gets the answer it should (413, 401,
//! 408) or its connection is closed by the server; every `/health` probe is
//! answered 200; the process's peak memory grows by less than a bound; and
//! the projections equal the reference fold of every event (nothing lost,
//! nothing doubled). Printed, not asserted (no timing is): `/health`
//! latency before and during the abuse, memory, and how long each abuse
//! took to be cut off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::pipeline::{
    assert_projections, produce_paced_in_background, setup, wait_caught_up, workload, Pipeline,
};
use crate::support::Running;

/// A response as read off the wire: the status and the body's length.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 response (headers, then a `Content-Length` body).
async fn read_answer(stream: &mut TcpStream) -> std::io::Result<Answer> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Answer { status, body })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// True once the server has closed the connection (a read returns 0 or
/// fails), false if it is still open after `limit`.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut byte)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar written before closing: read on.
            Ok(Ok(_)) => {}
        }
    }
}

/// `GET /health` on a new connection; its latency, or why it failed.
async fn probe(http: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = TcpStream::connect(http)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: cchc\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut s))
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    if answer.status != 200 {
        return Err(format!("status {}", answer.status));
    }
    Ok(started.elapsed())
}

/// Probes `/health` every 20 ms until `done`; the latencies, in order.
fn probe_until(http: String, done: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        while !done.load(Ordering::Relaxed) {
            match probe(&http).await {
                Ok(latency) => latencies.push(latency),
                Err(why) => panic!("/health was not answered during the abuse: {why}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies
    })
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        v.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// 10,000 requests with bad tokens over 20 kept-alive connections: each a
/// 401 (three kinds of wrong: an unknown token, a read token on an admin
/// route, none).
async fn bad_tokens(http: String) -> Duration {
    let started = Instant::now();
    let clients = (0..20).map(|c| {
        let http = http.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&http).await.expect("connect");
            for i in 0..500 {
                let request = match (c + i) % 3 {
                    0 => "GET /api/v1/communes/31471/indicators HTTP/1.1\r\nHost: cchc\r\nAuthorization: Bearer not-a-token\r\n\r\n".to_string(),
                    1 => format!("GET /api/v1/alerts?token=guess-{i} HTTP/1.1\r\nHost: cchc\r\n\r\n"),
                    _ => "GET /api/v1/admin/dead-letters HTTP/1.1\r\nHost: cchc\r\nAuthorization: Bearer demo-read-token-x\r\n\r\n".to_string(),
                };
                s.write_all(request.as_bytes()).await.expect("write");
                let answer = read_answer(&mut s).await.expect("an answer");
                assert_eq!(
                    answer.status,
                    401,
                    "{}",
                    String::from_utf8_lossy(&answer.body)
                );
            }
        })
    });
    for c in futures::future::join_all(clients).await {
        c.expect("bad-token client");
    }
    started.elapsed()
}

/// A 100 MB body, announced by `Content-Length` or chunked: a 413 (the
/// limit is `http.max_body_bytes`, 1 MiB), and the server stops reading.
async fn huge_body(http: &str, chunked: bool) -> (u16, usize) {
    let mut s = TcpStream::connect(http).await.expect("connect");
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", 100 << 20)
    };
    let head = format!(
        "POST /api/v1/admin/dead-letters/1/resend HTTP/1.1\r\nHost: cchc\r\n\
         Authorization: Bearer demo-admin-token\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    let (mut read, mut write) = s.into_split();
    let writer = tokio::spawn(async move {
        let block = vec![b' '; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..100 {
            let written = if chunked {
                let mut framed = format!("{:x}\r\n", block.len()).into_bytes();
                framed.extend_from_slice(&block);
                framed.extend_from_slice(b"\r\n");
                write.write_all(&framed).await
            } else {
                write.write_all(&block).await
            };
            if written.is_err() {
                break;
            }
            sent += block.len();
        }
        sent
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut buf)).await;
    let status = String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    writer.abort();
    let sent = writer.await.unwrap_or(0);
    (status, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_of_the_api_leaves_health_answering_memory_bounded_and_every_event_counted() {
    let (setup, store) = setup(3, None).await;
    let mut pipeline = Pipeline::start(&setup, "abuse");
    let http = pipeline.http();
    let pid = pipeline.pid();

    // Quiet: the baseline.
    let mut quiet = Vec::new();
    for _ in 0..100 {
        quiet.push(probe(&http).await.expect("/health when quiet"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (rss_before, _) = memory(pid);

    // Events arrive all through the abuse (about 100,000 records, repeats
    // and malformed ones among them, over 16 s).
    let producing = produce_paced_in_background(
        &setup,
        workload(41, 50_000, 0.02),
        Duration::from_millis(800),
    );
    let done = Arc::new(AtomicBool::new(false));
    let probing = probe_until(http.clone(), done.clone());

    // 1,000 connections that send nothing, and 100 kept alive after one
    // request and then left idle.
    let mut idle = Vec::new();
    for _ in 0..1_000 {
        idle.push(TcpStream::connect(&http).await.expect("an idle connection"));
    }
    let mut kept_alive = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(&http).await.expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: cchc\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_answer(&mut s).await.unwrap().status, 200);
        kept_alive.push(s);
    }
    let idle_since = Instant::now();

    // An event stream whose client never reads (a 4 KiB receive buffer).
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sse = socket.connect(http.parse().unwrap()).await.unwrap();
    sse.write_all(
        b"GET /api/v1/projections/stream HTTP/1.1\r\nHost: cchc\r\nAuthorization: Bearer demo-read-token\r\n\r\n",
    )
    .await
    .unwrap();

    // A body trickled a byte a second, and headers that never end.
    let trickle = {
        let http = http.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut s = TcpStream::connect(&http).await.unwrap();
            s.write_all(
                b"POST /api/v1/admin/dead-letters/1/resend HTTP/1.1\r\nHost: cchc\r\n\
                  Authorization: Bearer demo-admin-token\r\nContent-Length: 1000\r\n\r\n{",
            )
            .await
            .unwrap();
            let (mut read, mut write) = s.into_split();
            let dripping = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if write.write_all(b" ").await.is_err() {
                        break;
                    }
                }
            });
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut buf)).await;
            dripping.abort();
            let answer = String::from_utf8_lossy(&buf).to_string();
            (answer, started.elapsed())
        })
    };
    let slow_headers = {
        let http = http.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut s = TcpStream::connect(&http).await.unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: cchc\r\n")
                .await
                .unwrap();
            let closed = closed_by_server(&mut s, Duration::from_secs(60)).await;
            (closed, started.elapsed())
        })
    };

    // The huge bodies, then the bad tokens.
    let announced = huge_body(&http, false).await;
    let chunked = huge_body(&http, true).await;
    let bad = bad_tokens(http.clone()).await;

    let (trickled, trickle_took) = trickle.await.unwrap();
    let (headers_closed, headers_took) = slow_headers.await.unwrap();

    // The idle connections: closed by the server (the header deadline).
    let closing = idle
        .iter_mut()
        .chain(kept_alive.iter_mut())
        .map(|s| closed_by_server(s, Duration::from_secs(30)));
    let idle_open = futures::future::join_all(closing)
        .await
        .into_iter()
        .filter(|closed| !closed)
        .count();
    let idle_took = idle_since.elapsed();

    done.store(true, Ordering::Relaxed);
    let during = probing.await.expect("/health answered all through");
    let (rss_after, peak) = memory(pid);

    wait_caught_up(
        &store,
        &setup.topic,
        3,
        &mut [&mut pipeline as &mut dyn Running],
        Duration::from_secs(300),
    )
    .await;
    let produced = producing.await.unwrap();
    assert_projections(&store, &produced).await;
    // The stream's client was never served more than its buffers hold, and
    // the server is still there for it.
    pipeline.assert_running();
    drop(sse);

    println!("abuse: /health quiet  {}", percentiles(quiet));
    println!("abuse: /health during {}", percentiles(during));
    println!(
        "abuse: memory before {} MiB, after {} MiB, peak {} MiB",
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024
    );
    println!(
        "abuse: 100 MB body {:?} after {} MiB sent, chunked {:?} after {} MiB sent",
        announced.0,
        announced.1 >> 20,
        chunked.0,
        chunked.1 >> 20
    );
    println!("abuse: 10,000 bad tokens answered 401 in {bad:.1?}");
    println!(
        "abuse: trickled body answered in {trickle_took:.1?}, unfinished headers closed in {headers_took:.1?}, 1,100 idle connections closed within {idle_took:.1?}"
    );
    println!("abuse: {} records projected exactly", produced.records);

    assert_eq!(announced.0, 413, "an announced 100 MB body is refused");
    assert!(
        announced.1 < 100 << 20,
        "and not read to its end ({} bytes sent)",
        announced.1
    );
    assert_eq!(chunked.0, 413, "a chunked 100 MB body is refused");
    assert!(
        trickled.starts_with("HTTP/1.1 408"),
        "a trickled body times out: {trickled}"
    );
    assert!(headers_closed, "unfinished headers are cut off");
    assert_eq!(idle_open, 0, "idle connections are closed by the server");
    // Memory: 1,100 connections, a stalled stream and 10,000 refusals may
    // cost buffers, not a body's 100 MB.
    assert!(
        peak < rss_before + 64 * 1024,
        "peak memory {peak} KiB, from {rss_before} KiB before the abuse"
    );
}
