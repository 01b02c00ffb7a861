//! The dashboard in a real browser: headless Chromium (Debian's package,
//! driven through chromedriver) logs in with an API token, sees a finished
//! job in the jobs table and in the charts of the last hour (counts, queue
//! depth, machines in flight, queue wait), clicks Cancel
//! on a sleeping job and watches the live table and charts show it
//! cancelled, then opens a job's page; and reads a
//! job's log in the job page's pane, live while the job runs. Fails, never
//! skips, when Chromium is missing (`scripts/ensure-chromium` installs it).

use std::time::Duration;

use crate::support::webdriver::Browser;
use crate::support::{spawn_system_with, Options, TestSystem};
use jobs::JobStatus;
use serde_json::json;

const TOKEN: &str = "browser-test-token";
const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_jobs_and_cancels_one() {
    let browser = Browser::start().await;
    let system = spawn_system_with(Options {
        api_tokens: vec![TOKEN.into()],
        ..Options::default()
    })
    .await;
    let echo = system
        .submit(json!({"kind": "echo", "params": {"greeting": "<b>hello</b>"}}))
        .await;
    let echo = echo.id;
    let echo_job = system.wait_for(&echo, JobStatus::Succeeded, WITHIN).await;
    let sleeper = system
        .submit(json!({"kind": "sleep", "params": {"ms": 120_000}}))
        .await;
    let sleeper = sleeper.id;
    system.wait_for(&sleeper, JobStatus::Running, WITHIN).await;

    log_in(&browser, &system).await;

    // The jobs table: the finished job, and the sleeping one with Cancel.
    let finished = browser
        .wait_for(&format!("tr[data-job=\"{echo}\"]"), WITHIN)
        .await;
    assert_eq!(
        finished.attribute("data-status").await.as_deref(),
        Some("succeeded")
    );
    assert!(finished.text().await.contains("succeeded"));
    let summary = browser.wait_for("#summary", WITHIN).await.text().await;
    assert!(summary.contains("1\nrunning"), "{summary}");
    // The charts of the last hour: both attempts started, the echo
    // succeeded, each drawn as a bar in this minute.
    let started = browser
        .wait_for("figure[data-series=started]", WITHIN)
        .await;
    assert_eq!(started.attribute("data-total").await.as_deref(), Some("2"));
    let succeeded = browser
        .wait_for("figure[data-series=succeeded]", WITHIN)
        .await;
    assert_eq!(
        succeeded.attribute("data-total").await.as_deref(),
        Some("1")
    );
    assert!(succeeded.text().await.contains("succeeded 1"));
    browser
        .wait_for("figure[data-series=succeeded] svg rect.bar", WITHIN)
        .await;
    // Both jobs sat in the queue before their claim (each claim samples
    // the depth first), the sleeper holds a machine (later claims sample
    // it), and both claims' waits are in the queue-wait chart.
    for series in ["queue_depth", "in_flight", "queue_wait"] {
        browser
            .wait_for(
                &format!("figure[data-series={series}] svg rect.bar"),
                WITHIN,
            )
            .await;
    }
    let wait = browser
        .wait_for("figure[data-series=queue_wait][data-claims=\"2\"]", WITHIN)
        .await;
    let p95 = wait.attribute("data-p95-ms").await.unwrap_or_default();
    assert!(p95.parse::<u64>().is_ok(), "p95 {p95:?}");
    assert!(wait.text().await.contains("p95"));
    browser
        .wait_for(
            &format!("tr[data-job=\"{sleeper}\"] button[data-action=cancel]"),
            WITHIN,
        )
        .await
        .click()
        .await;

    // The live table catches up: the row shows the job cancelled.
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let row = browser
            .wait_for(&format!("tr[data-job=\"{sleeper}\"]"), WITHIN)
            .await;
        if row.attribute("data-status").await.as_deref() == Some("cancelled") {
            assert!(row.text().await.contains("cancelled"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the row never showed cancelled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(system.job(&sleeper).await.status, JobStatus::Cancelled);
    // The live refresh redraws the charts too.
    browser
        .wait_for(
            "figure[data-series=cancelled][data-total=\"1\"] svg rect.bar",
            WITHIN,
        )
        .await;

    // The job page: result (escaped, shown as text) and the attempt.
    browser.goto(&system.url(&format!("/jobs/{echo}"))).await;
    let result = browser.wait_for("#result", WITHIN).await.text().await;
    assert!(result.contains("<b>hello</b>"), "{result}");
    let attempts = browser.wait_for("#attempts", WITHIN).await.text().await;
    let machine = echo_job.attempts[0].machine_id.as_deref().unwrap();
    assert!(attempts.contains(machine), "{attempts}");
    assert!(attempts.contains("succeeded"), "{attempts}");

    browser.close().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_page_log_pane_shows_each_attempt_and_follows_live() {
    let browser = Browser::start().await;
    let system = spawn_system_with(Options {
        api_tokens: vec![TOKEN.into()],
        ..Options::default()
    })
    .await;
    let printer = system
        .submit(json!({"kind": "print", "params": {"lines": 50}}))
        .await;
    let printer = printer.id;
    system
        .wait_for(&printer, JobStatus::Succeeded, WITHIN)
        .await;
    log_in(&browser, &system).await;

    // A finished job: the pane reads its whole log, then says it ended.
    browser.goto(&system.url(&format!("/jobs/{printer}"))).await;
    browser
        .wait_for("#log-lines[data-ended=true]", WITHIN)
        .await;
    assert_pane_shows_all_fifty(&browser).await;
    // One attempt chosen: the pane starts over with that attempt's lines.
    browser
        .wait_for("#log-attempt option[value=\"1\"]", WITHIN)
        .await
        .click()
        .await;
    browser
        .wait_for("#log-lines[data-ended=true]", WITHIN)
        .await;
    assert_pane_shows_all_fifty(&browser).await;
    let raw = browser.wait_for("#log-raw", WITHIN).await;
    let href = raw.attribute("href").await.unwrap_or_default();
    assert!(
        href.ends_with(&format!("/jobs/{printer}/logs?attempt=1")),
        "{href}"
    );

    // A running job: its line reaches the open page while it still runs.
    let holder = system
        .submit(json!({"kind": "allocate", "params": {"mb": 1, "hold_ms": 120_000}}))
        .await;
    let holder = holder.id;
    browser.goto(&system.url(&format!("/jobs/{holder}"))).await;
    let line = browser
        .wait_for("#log-lines .log-line[data-stream=log]", WITHIN)
        .await;
    assert!(line.text().await.contains("allocating 1 MiB"));
    assert_eq!(
        browser
            .wait_for("#log-lines", WITHIN)
            .await
            .attribute("data-ended")
            .await
            .as_deref(),
        Some("false"),
        "the pane is still following"
    );
    assert_eq!(system.job(&holder).await.status, JobStatus::Running);
    system
        .request(reqwest::Method::POST, &format!("/jobs/{holder}/cancel"))
        .send()
        .await
        .unwrap();
    system.wait_for(&holder, JobStatus::Cancelled, WITHIN).await;

    browser.close().await;
    system.stop().await;
}

/// The `print` job's fifty lines, in order, each once.
async fn assert_pane_shows_all_fifty(browser: &Browser) {
    let text = browser.wait_for("#log-lines", WITHIN).await.text().await;
    let printed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("[1 stdout]"))
        .map(|l| l.rsplit("] ").next().unwrap())
        .collect();
    let expected: Vec<String> = (1..=50).map(|i| format!("line {i} of 50")).collect();
    assert_eq!(printed, expected, "{text}");
}

/// Without a session the dashboard sends the browser to the login form;
/// logs in there with the test's token.
async fn log_in(browser: &Browser, system: &TestSystem) {
    browser.goto(&system.url("/")).await;
    let token = browser.wait_for("input[name=token]", WITHIN).await;
    assert!(browser.current_url().await.ends_with("/login"));
    token.type_text(TOKEN).await;
    browser
        .wait_for("form[action=\"/login\"] button", WITHIN)
        .await
        .click()
        .await;
    browser.wait_for("#jobs", WITHIN).await;
}
