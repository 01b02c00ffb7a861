//! Client-side pacing (`--api-pacing`) against the mock with Fly's rate
//! limits on: a burst of jobs waits its turn in the dispatchers instead of
//! drawing 429s, and two dispatchers share the app's create budget
//! through the store.

use std::time::Duration;

use crate::support::{spawn_system_with, Options};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cold_jobs_across_two_dispatchers_draws_few_429s() {
    let system = spawn_system_with(Options {
        max_machines: 8,
        mock: |config| config.rate_limits = true,
        ..Options::default()
    })
    .await;
    let peer = system.spawn_peer().await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let job = system
            .submit(json!({"kind": "echo", "params": {"n": n}}))
            .await;
        ids.push(job.id);
    }
    for id in &ids {
        system
            .wait_for(id, jobs::JobStatus::Succeeded, Duration::from_secs(90))
            .await;
    }
    let stats = system.mock_stats();
    let calls: u64 = stats.calls.values().sum();
    assert_eq!(stats.created, 10, "{stats:?}");
    // Without pacing, ten creates at once draw 7 429s from the create
    // budget alone (burst 3), more with every retry.
    assert!(
        stats.rate_limited * 20 <= calls,
        "{} of {calls} calls were rate-limited: {stats:?}",
        stats.rate_limited
    );
    peer.trigger();
    system.stop().await;
}
