//! The server's bounds, against the real server over raw TCP and HTTP:
//! slow-header and slow-body clients are cut off (also on the
//! unauthenticated `POST /login`), connections are capped, event streams
//! and long-polls are capped per token and in all, tokens are rate
//! limited, and listings stay small unless asked for more.

use std::time::Duration;

use crate::support::{spawn_system_with, Options, TestSystem};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const A: &str = "token-a-0123456789";
const B: &str = "token-b-0123456789";
const WITHIN: Duration = Duration::from_secs(20);

async fn system(extra: &[&str]) -> TestSystem {
    spawn_system_with(Options {
        api_tokens: vec![A.into(), B.into()],
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    })
    .await
}

async fn connect(system: &TestSystem) -> TcpStream {
    TcpStream::connect(system.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or `WITHIN` passes,
/// which fails the test); returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WITHIN, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let system = system(&["--header-timeout-secs=1", "--body-timeout-secs=1"]).await;

    // Slow headers on the unauthenticated login: one header byte at a
    // time, never the blank line. The server closes the connection
    // although bytes keep coming.
    let mut slow = connect(&system).await;
    slow.write_all(b"POST /login HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = async {
        for byte in
            b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    };
    let cut = tokio::time::timeout(WITHIN, trickle).await;
    assert_eq!(
        cut,
        Ok(true),
        "writes kept succeeding for {:?}",
        started.elapsed()
    );

    // An idle connection that never sends a request is closed too.
    let mut idle = connect(&system).await;
    assert_eq!(read_until_closed(&mut idle).await, "");

    // A slow body: headers complete, the body never does. 408, JSON, and
    // the connection is closed.
    let mut body = connect(&system).await;
    body.write_all(
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    // The server still serves.
    let health = system
        .http
        .get(system.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_one_to_close() {
    let system = system(&["--max-connections=2", "--header-timeout-secs=2"]).await;
    let mut held = [connect(&system).await, connect(&system).await];
    // Both are taken as soon as the server sees a request on them.
    for stream in &mut held {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    }
    // A third is answered, but only once a held one was closed by the
    // server (idle past the header timeout): the cap held until then.
    let mut third = connect(&system).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut closed = 0;
    for stream in &mut held {
        let mut buffer = [0u8; 16];
        if matches!(
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    assert!(
        closed >= 1,
        "the third connection was served while two were open"
    );
    system.stop().await;
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A job that stays scheduled for an hour: streams on it stay open.
async fn waiting_job(system: &TestSystem) -> String {
    let job = system
        .submit(json!({"kind": "echo", "delay_secs": 3600}))
        .await;
    job.id.to_string()
}

async fn open_stream(system: &TestSystem, token: &str, id: &str) -> reqwest::Response {
    system
        .http
        .get(system.url(&format!("/jobs/{id}/events")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn assert_refused(response: reqwest::Response, status: u16) {
    assert_eq!(response.status(), status);
    assert!(retry_after(&response) >= 1);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("most"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_and_long_polls_are_capped_per_token_and_in_all() {
    let system = system(&[
        "--max-event-streams=3",
        "--max-event-streams-per-token=2",
        "--max-long-polls=5",
        "--max-long-polls-per-token=1",
    ])
    .await;
    let id = waiting_job(&system).await;

    let first = open_stream(&system, A, &id).await;
    assert_eq!(first.status(), 200);
    let _second = open_stream(&system, A, &id).await;
    assert_refused(open_stream(&system, A, &id).await, 429).await;
    let _other = open_stream(&system, B, &id).await;
    // Three open in all: B, under its own share, meets the total.
    assert_refused(open_stream(&system, B, &id).await, 503).await;

    // Closing a stream gives its slot back, once the server notices
    // (at the latest at the next keep-alive comment, 15 s).
    drop(first);
    let deadline = Instant::now() + 2 * WITHIN;
    loop {
        let again = open_stream(&system, A, &id).await;
        if again.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Long-polls: one per token here. The first waits; a second is
    // refused while it does; a plain GET is never limited.
    let poll = |wait: u32| {
        system
            .http
            .get(system.url(&format!("/jobs/{id}?wait={wait}")))
            .bearer_auth(A)
            .send()
    };
    let mut waiting = tokio::spawn(poll(30));
    let deadline = Instant::now() + WITHIN;
    let refused = loop {
        // Short, in case it is admitted before the long one.
        let second = poll(1).await.unwrap();
        if second.status() == 429 {
            break second;
        }
        // The short one won the race and the long one was refused: again.
        if waiting.is_finished() {
            waiting = tokio::spawn(poll(30));
        }
        assert!(
            Instant::now() < deadline,
            "the second long-poll was never refused"
        );
    };
    assert_refused(refused, 429).await;
    let plain = system
        .http
        .get(system.url(&format!("/jobs/{id}")))
        .bearer_auth(A)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    waiting.abort();
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_is_rate_limited_on_its_own() {
    let system = system(&["--rate-limit-per-sec=1", "--rate-limit-burst=3"]).await;
    let get = |token: &'static str| {
        system
            .http
            .get(system.url("/jobs?limit=1"))
            .bearer_auth(token)
            .send()
    };
    let mut statuses = Vec::new();
    let limited = loop {
        let response = get(A).await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            break response;
        }
        assert!(statuses.len() < 50, "never limited: {statuses:?}");
    };
    assert!(
        statuses.len() >= 4,
        "the burst of 3 was allowed: {statuses:?}"
    );
    assert!(retry_after(&limited) >= 1);
    let body: Value = limited.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    // Another token has its own budget; health checks have none.
    assert_eq!(get(B).await.unwrap().status(), 200);
    let health = system
        .http
        .get(system.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_leave_out_params_and_results_unless_asked() {
    let system = system(&[]).await;
    let big = "x".repeat(100_000);
    let job = system
        .submit_raw(json!({"kind": "echo", "params": {"blob": big}, "delay_secs": 3600}))
        .await;
    let list = |query: &str| {
        let request = system
            .http
            .get(system.url(&format!("/jobs{query}")))
            .bearer_auth(A);
        crate::support::send_json(request)
    };
    let summary = list("").await;
    assert_eq!(summary["jobs"][0]["id"], job["id"]);
    assert!(summary["jobs"][0].get("params").is_none(), "{summary}");
    let full = list("?full=true").await;
    assert_eq!(
        full["jobs"][0]["params"]["blob"].as_str().unwrap().len(),
        100_000
    );
    let too_many = list("?limit=201").await;
    assert_eq!(too_many["field"], "limit");
    system.stop().await;
}
