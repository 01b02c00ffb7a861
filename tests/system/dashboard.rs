//! The dashboard over plain HTTP: the login cookie and its flags, the same
//! auth as the API (bearer token or cookie), `/jobs/{id}` as HTML for
//! browsers and JSON for everyone else, and escaping of what users send.
//! `tests/system/browser.rs` clicks through it in Chromium.

use std::time::Duration;

use crate::support::{send_json, send_text, spawn_system_with, Options};
use jobs::JobStatus;
use reqwest::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::{json, Value};

const TOKEN: &str = "dashboard-test-token";
const WITHIN: Duration = Duration::from_secs(60);
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cookie_content_negotiation_and_escaping() {
    let system = spawn_system_with(Options {
        api_tokens: vec![TOKEN.into()],
        ..Options::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let job = system
        .submit(json!({"kind": "echo", "params": {"note": "<script>alert('x')</script>"}}))
        .await;
    let id = job.id.to_string();
    system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;

    // No session: browsers go to the login form, API clients get 401 JSON.
    let page = http
        .get(system.url("/"))
        .header(ACCEPT, BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()[LOCATION], "/login");
    for path in ["/jobs", "/metrics", &format!("/jobs/{id}")] {
        let api = http.get(system.url(path)).send().await.unwrap();
        assert_eq!(api.status(), 401, "{path}");
    }
    let form = http.get(system.url("/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("name=\"token\""));

    let wrong = http
        .post(system.url("/login"))
        .form(&[("token", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let login = http
        .post(system.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()[LOCATION], "/");
    let cookie = login.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback");
    let session = cookie.split(';').next().unwrap().to_string();

    // Behind Fly's proxy (HTTPS) the cookie is Secure.
    let proxied = http
        .post(system.url("/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(proxied.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    // With the cookie: the dashboard, escaped; the API accepts it too.
    let with_session = |path: &str| http.get(system.url(path)).header(COOKIE, &session);
    let index = with_session("/")
        .header(ACCEPT, BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    let policy = index.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'sha256-"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let html = index.text().await.unwrap();
    assert!(html.contains(&format!("data-job=\"{id}\" data-status=\"succeeded\"")));
    let listed: Value = send_json(with_session("/jobs")).await;
    assert_eq!(listed["jobs"][0]["id"], id.as_str());

    // One path, two representations: HTML for browsers, JSON by default.
    let job_page = with_session(&format!("/jobs/{id}"))
        .header(ACCEPT, BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert!(job_page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = job_page.text().await.unwrap();
    assert!(!html.contains("<script>alert"), "params are escaped");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut request = http
            .get(system.url(&format!("/jobs/{id}")))
            .bearer_auth(TOKEN);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["vary"], "accept");
        let job: Value = response.json().await.unwrap();
        assert_eq!(job["id"], id.as_str(), "Accept: {accept:?}");
    }

    // The dashboard's filters: a bad status names the field.
    let bad: Value = send_json(with_session("/?status=sleeping")).await;
    assert_eq!(bad["field"], "status");
    let filtered = send_text(with_session("/?status=failed&kind=echo")).await;
    assert!(!filtered.contains(&id), "a succeeded job is filtered out");

    // A page holds 100 jobs; the "older jobs" link keeps the filters.
    for i in 0..101 {
        system
            .submit(json!({"kind": "later", "params": {"i": i}, "delay_secs": 3600}))
            .await;
    }
    let first = send_text(with_session("/?kind=later&status=scheduled")).await;
    assert_eq!(first.matches("data-status=\"scheduled\"").count(), 100);
    let older = first
        .split("id=\"older\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an older-jobs link")
        .replace("&amp;", "&");
    assert!(
        older.contains("status=scheduled") && older.contains("kind=later"),
        "{older}"
    );
    let second = send_text(with_session(&older)).await;
    assert_eq!(second.matches("data-status=\"scheduled\"").count(), 1);
    assert!(!second.contains("id=\"older\""), "the last page");

    // Logging out clears the cookie.
    let logout = http
        .post(system.url("/logout"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    assert!(logout.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    system.stop().await;
}
