//! Dashboard sessions and the login form's defences, against the real
//! server: the cookie holds a session id stored with an expiry (never the
//! token) and logout revokes it; cross-site posts are refused; login
//! attempts are limited per client address; one credential per request;
//! the bearer scheme is matched without regard to case.

use crate::support::{spawn_system_with, Options, TestSystem};
use fred::prelude::*;
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::Value;

const TOKEN: &str = "sessions-test-token-0123456789";

async fn system(extra: &[&str]) -> TestSystem {
    spawn_system_with(Options {
        api_tokens: vec![TOKEN.into()],
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Logs in and returns the `name=value` of the session cookie.
async fn login(system: &TestSystem) -> String {
    let response = client()
        .post(system.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("Max-Age="), "{cookie}");
    cookie.split(';').next().unwrap().to_string()
}

async fn status_with(system: &TestSystem, headers: &[(&str, &str)]) -> u16 {
    let mut request = client().get(system.url("/jobs"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_ids_in_the_store_and_logout_revokes_them() {
    let system = system(&[]).await;
    let session = login(&system).await;
    assert!(
        !session.contains(TOKEN),
        "the cookie holds the token: {session}"
    );
    let (_, id) = session.split_once('=').unwrap();
    assert_eq!(id.len(), 64, "{session}");
    // The store keeps it with an expiry.
    let key = format!("{{{}}}:session:{id}", system.store.namespace());
    let ttl: i64 = system.raw_store().await.ttl(key).await.unwrap();
    assert!(ttl > 0, "ttl {ttl}");
    assert_eq!(status_with(&system, &[("cookie", &session)]).await, 200);
    // The raw token is not a session.
    let raw = format!("dispatcher_session={TOKEN}");
    assert_eq!(status_with(&system, &[("cookie", &raw)]).await, 401);

    // Cross-site posts are refused and change nothing.
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ] {
        let logout = client()
            .post(system.url("/logout"))
            .header(COOKIE, &session)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), 403, "{name}: {value}");
        let body: Value = logout.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("another site"));
        let login = client()
            .post(system.url("/login"))
            .header(name, value)
            .form(&[("token", TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 403, "{name}: {value}");
    }
    assert_eq!(status_with(&system, &[("cookie", &session)]).await, 200);

    // A same-origin logout ends the session: the old cookie, replayed, fails.
    let host = system.base.trim_start_matches("http://").to_string();
    let logout = client()
        .post(system.url("/logout"))
        .header(COOKIE, &session)
        .header("origin", system.base.clone())
        .header("host", host)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    assert!(logout.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(status_with(&system, &[("cookie", &session)]).await, 401);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_per_request_and_a_case_insensitive_scheme() {
    let system = system(&[]).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {TOKEN}");
        assert_eq!(
            status_with(&system, &[("authorization", &value)]).await,
            200,
            "{scheme}"
        );
    }
    let basic = format!("Basic {TOKEN}");
    assert_eq!(
        status_with(&system, &[("authorization", &basic)]).await,
        401
    );

    // Two Authorization headers, or two session cookies: refused, even
    // when one of them is right.
    let right = format!("Bearer {TOKEN}");
    let mut request = client().get(system.url("/jobs"));
    request = request
        .header(AUTHORIZATION, "Bearer guess")
        .header(AUTHORIZATION, &right);
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 400);
    let session = login(&system).await;
    let many = format!("dispatcher_session=guess; {session}");
    assert_eq!(status_with(&system, &[("cookie", &many)]).await, 400);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_limited_per_address() {
    let system = system(&["--login-attempts-per-minute=3"]).await;
    let attempt = |token: &'static str| {
        client()
            .post(system.url("/login"))
            .form(&[("token", token)])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(attempt("guess").await.unwrap().status(), 401);
    }
    // Now even the right token waits: the limit is checked first.
    let limited = attempt(TOKEN).await.unwrap();
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(limited.headers().get(SET_COOKIE).is_none());
    // The API itself is not slowed for token holders.
    let right = format!("Bearer {TOKEN}");
    assert_eq!(
        status_with(&system, &[("authorization", &right)]).await,
        200
    );
    system.stop().await;
}
