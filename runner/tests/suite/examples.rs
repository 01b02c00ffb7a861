//! The examples shown in docs/writing-jobs.md, run as jobs against a real store:
//! the Rust handler `runner/examples/thumbnail.rs` and the Python script
//! `examples/python/report.py`.

// The example's `main` is for running it as a program; here its runner
// runs in-process.
#[allow(dead_code)]
#[path = "../../examples/thumbnail.rs"]
mod thumbnail;

use crate::common::{spec, TestStore};
use jobs::{JobStatus, Outcome};
use runner::Runner;
use serde_json::json;

const REPORT_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python/report.py");

fn report() -> Runner {
    Runner::new().command("report", ["python3", REPORT_PY])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thumbnail_example_makes_thumbnails_and_reports_progress() {
    let store = TestStore::start().await;
    let params =
        json!({"image": "photos/cat.jpg", "width": 4000, "height": 3000, "sizes": [128, 512]});
    let ended = store
        .run_to_end(&thumbnail::runner(), &spec("thumbnail", params))
        .await;
    assert_eq!(ended.job.status, JobStatus::Succeeded, "{}", ended.error());
    assert_eq!(
        ended.job.result,
        Some(json!({"thumbnails": [
            {"size": 128, "width": 128, "height": 96, "path": "photos/cat-128.jpg"},
            {"size": 512, "width": 512, "height": 384, "path": "photos/cat-512.jpg"},
        ]}))
    );
    let progress = ended.job.progress.expect("progress recorded");
    assert_eq!(
        (progress.percent, progress.message.as_str()),
        (100, "512px done")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thumbnail_example_refuses_bad_params_for_good() {
    let store = TestStore::start().await;
    let mut job = spec(
        "thumbnail",
        json!({"image": "cat.jpg", "width": 4000, "height": 3000, "sizes": [128, -1]}),
    );
    job.max_attempts = 3;
    let ended = store.run_to_end(&thumbnail::runner(), &job).await;
    assert_eq!(ended.job.status, JobStatus::Failed);
    assert_eq!(ended.job.attempts.len(), 1, "not retried");
    assert_eq!(
        ended.error(),
        "invalid params: sizes[1]: invalid value: integer `-1`, expected u32"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_reports_progress_and_a_result() {
    let store = TestStore::start().await;
    let ended = store
        .run_to_end(
            &report(),
            &spec(
                "report",
                json!({"month": "2026-10", "regions": ["eu", "us"]}),
            ),
        )
        .await;
    assert_eq!(ended.job.status, JobStatus::Succeeded, "{}", ended.error());
    assert_eq!(
        ended.job.result,
        Some(json!({"month": "2026-10", "totals": {"eu": 5620, "us": 5760}, "total": 11380}))
    );
    let progress = ended.job.progress.expect("progress recorded");
    assert_eq!(
        (progress.percent, progress.message.as_str()),
        (100, "summed us")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_fails_bad_params_for_good() {
    let store = TestStore::start().await;
    let mut job = spec("report", json!({"month": "October"}));
    job.max_attempts = 3;
    let ended = store.run_to_end(&report(), &job).await;
    assert_eq!(ended.job.status, JobStatus::Failed);
    assert_eq!(
        ended
            .job
            .attempts
            .iter()
            .map(|a| a.outcome)
            .collect::<Vec<_>>(),
        [Some(Outcome::Error)]
    );
    assert_eq!(
        ended.error(),
        r#"exit code 65: params.month must be a month like "2026-10", got 'October'"#
    );
}
