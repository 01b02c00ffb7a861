//! Part 5, event streams: the dispatcher's memory with many
//! `GET /jobs/{id}/events` streams open, and its store commands with few
//! streams against many. Streams follow the hub's events, never a timer,
//! so open streams on idle jobs cost the store nothing, however many.
//! At the end every job is cancelled and every stream must end with its
//! `done` event: the streams really follow the jobs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::api;
use crate::system::{Binaries, BootWith, System, SystemOptions};

pub struct StreamSizes {
    /// Jobs the streams are spread over (scheduled an hour ahead: idle).
    pub jobs: usize,
    pub few: usize,
    pub many: usize,
    /// Store commands are counted over this long with each stream count.
    pub window: Duration,
    pub limit: Duration,
}

pub struct StreamResult {
    pub many: usize,
    pub few: usize,
    pub peak_rss: u64,
    /// The dispatcher's store commands per second while idle.
    pub few_commands_per_sec: f64,
    pub many_commands_per_sec: f64,
    /// Store commands per stream when every job is cancelled at once.
    pub commands_per_stream_on_cancel: f64,
}

pub async fn run(binaries: &Binaries, sizes: &StreamSizes) -> anyhow::Result<StreamResult> {
    let streams = sizes.many.to_string();
    let system = System::start(
        binaries,
        SystemOptions {
            max_machines: 0,
            boot: BootWith::Process,
            count_commands: true,
            extra_args: vec![
                "--max-event-streams".into(),
                streams.clone(),
                "--max-event-streams-per-token".into(),
                streams,
            ],
            durable: false,
            image_env: Vec::new(),
            faithful_mock: false,
        },
    )
    .await?;
    let measured = measure(&system, sizes).await;
    system.stop().await;
    measured
}

/// Open streams, and how many have seen their first event and their end.
struct Streams {
    started: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Streams {
    fn open(&mut self, http: &reqwest::Client, base: &str, id: &str) {
        let (http, url) = (http.clone(), format!("{base}/jobs/{id}/events"));
        let (started, done) = (self.started.clone(), self.done.clone());
        self.tasks.spawn(async move {
            let mut answer = http.get(url).send().await?.error_for_status()?;
            let mut first = true;
            let mut seen = String::new();
            while let Some(chunk) = answer.chunk().await? {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if first && seen.contains("event: status") {
                    first = false;
                    started.fetch_add(1, Ordering::Relaxed);
                }
                if seen.contains("event: done") {
                    done.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                // Keep only a tail long enough to hold an event name.
                if seen.len() > 4096 {
                    seen.drain(..seen.len() - 64);
                }
            }
            bail!("a stream ended without its done event")
        });
    }

    async fn wait(
        &self,
        counter: &AtomicU64,
        expected: usize,
        limit: Instant,
    ) -> anyhow::Result<()> {
        while counter.load(Ordering::Relaxed) < expected as u64 {
            anyhow::ensure!(Instant::now() < limit, "streams did not all answer in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

async fn measure(system: &System, sizes: &StreamSizes) -> anyhow::Result<StreamResult> {
    let deadline = Instant::now() + sizes.limit;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut ids = Vec::new();
    for _ in 0..sizes.jobs {
        let job = json!({"kind": "echo", "delay_secs": 3600});
        ids.push(api::submit(&http, &system.base, &job).await?);
    }
    let mut streams = Streams {
        started: Arc::default(),
        done: Arc::default(),
        tasks: tokio::task::JoinSet::new(),
    };
    let mut opened = 0;
    let mut rate = async |streams: &mut Streams, count: usize| -> anyhow::Result<f64> {
        while opened < count {
            streams.open(&http, &system.base, &ids[opened % ids.len()]);
            opened += 1;
        }
        streams.wait(&streams.started, count, deadline).await?;
        let before = system.valkey_commands().await?.dispatcher;
        let started = Instant::now();
        tokio::time::sleep(sizes.window).await;
        let after = system.valkey_commands().await?.dispatcher;
        Ok((after - before) as f64 / started.elapsed().as_secs_f64())
    };
    let few_commands_per_sec = rate(&mut streams, sizes.few).await?;
    let many_commands_per_sec = rate(&mut streams, sizes.many).await?;
    let peak_rss = system.dispatcher_usage()?.peak_rss;

    let before = system.valkey_commands().await?.dispatcher;
    let cancels = Arc::new(Semaphore::new(16));
    let mut cancelling = tokio::task::JoinSet::new();
    for id in &ids {
        let (http, url) = (http.clone(), format!("{}/jobs/{id}/cancel", system.base));
        let permit = cancels.clone().acquire_owned().await?;
        cancelling.spawn(async move {
            let answer = http.post(url).send().await;
            drop(permit);
            answer?.error_for_status().map(drop).context("cancel")
        });
    }
    while let Some(done) = cancelling.join_next().await {
        done??;
    }
    streams.wait(&streams.done, sizes.many, deadline).await?;
    while let Some(done) = streams.tasks.join_next().await {
        done??;
    }
    let after = system.valkey_commands().await?.dispatcher;
    // The cancels' own commands are in this count too: an upper bound.
    let commands_per_stream_on_cancel = (after - before) as f64 / sizes.many as f64;
    Ok(StreamResult {
        many: sizes.many,
        few: sizes.few,
        peak_rss,
        few_commands_per_sec,
        many_commands_per_sec,
        commands_per_stream_on_cancel,
    })
}
