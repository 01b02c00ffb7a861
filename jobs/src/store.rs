//! [`Store`]: the job store in Valkey.
//!
//! ## Key layout
//! Every key starts with `{namespace}:` (a hash tag, so all keys share one
//! slot and the scripts work on a cluster too):
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `job:{id}` | hash | the job; attempt fields as `a:{n}:{field}` |
//! | `jobs` | zset | every job (score 0, ordered by id = creation order) |
//! | `kind:{kind}` | zset | jobs of a kind (same ordering) |
//! | `kinds` | set | every kind ever queued (for per-kind queue depths) |
//! | `status:{status}`, `status:{status}:{kind}` | zset | jobs in a status (of a kind) |
//! | `secrets:{id}` | string | a job's write-only secrets (JSON), deleted when it finishes |
//! | `idempotency:{key}` | string | `{job id} {request hash}`, expires after the retention window |
//! | `in_flight_kind`, `in_flight_kinds` | hash | kind of each in-flight attempt; machines in flight per kind (for caps) |
//! | `queue` | zset | queued jobs, scored by priority then arrival |
//! | `scheduled` | zset | delayed or backing-off jobs, scored by run time |
//! | `in_flight` | zset | `{id}/{attempt}` holding a machine slot, scored by lease deadline |
//! | `in_flight_epoch` | hash | the fencing epoch of each in-flight attempt's current owner |
//! | `epochs` | counter | the last epoch issued |
//! | `finished` | zset | terminal jobs, scored by when they finished (for retention) |
//! | `log:{id}:{attempt}` | list | the attempt's log lines ([`crate::logs`]) |
//! | `seq` | counter | arrival order within a priority |
//! | `events` | pub/sub channel | one JSON message per change ([`crate::JobEvent`]) |
//! | `fq:*` | | flow control: per-key queues, the ring of keys, limits, rates, pauses ([`crate::flow`]) |
//! | `tag:{tag}`, `expiry`, `children:{parent}`, `child_keys:{parent}` | zset, zset, zset, hash | run management indexes (`run_options.lua`) |
//! | `child_batches:{parent}` | hash | batch key -> id of the batches a job enqueued (`submit.lua`) |
//! | `child_policy` | string | the dispatchers' submission policy, which runners validate children against |
//!
//! ## Transitions
//! Each state change is one Lua script in `src/scripts/` (prefixed with
//! `prelude.lua`), so it is atomic and two dispatchers can never both own
//! an attempt. The method names below are the transitions; the moves a
//! job's status may make are the prelude's `TRANSITIONS` table, which
//! `set_status` enforces (docs/state-machine.md).
//!
//! ## Protocol
//! A script's arguments are named: a wide one takes one JSON argument
//! serialized from a Rust struct (`EnqueueArgs`, renew's `Args`), a narrow
//! one names each `ARGV` in its first lines. Keys and `in_flight` members
//! are built in the prelude only. A reply a script never gives is
//! [`StoreError::Corrupt`], never a default.
//!
//! ## Fencing
//! Runners prove their attempt with its number and random token
//! ([`AttemptRef`]). Dispatchers prove ownership with an epoch as well
//! ([`Owned`]): every claim and takeover issues a new one, and every write
//! a dispatcher makes for the attempt carries it, so a dispatcher paused
//! past its lease and taken over can change nothing when it wakes
//! ([`Fenced::Lost`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use serde::Deserialize;
use serde_json::Value;

use crate::address::StoreAddress;
use crate::flow::FlowOptions;
use crate::job_env::Secrets;
use crate::model::{Fields, InvalidValue, Job, JobId, JobSpec, JobStatus, Outcome};
use crate::tls::{tls_config, CaCert};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store unavailable: {0}")]
    Unavailable(#[from] fred::error::Error),
    #[error("corrupt job record: {0}")]
    Corrupt(#[from] InvalidValue),
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(InvalidValue(e.to_string()))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Identifies one attempt of one job and proves the caller owns it: every
/// fenced write checks the number and the random token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRef {
    pub job_id: JobId,
    pub attempt: u32,
    pub token: String,
}

/// An attempt as the dispatcher that owns it holds it: the attempt and the
/// epoch of this ownership (see the module doc on fencing). Derefs to the
/// [`AttemptRef`], which is all a runner has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    pub attempt_ref: AttemptRef,
    pub epoch: u64,
}

impl std::ops::Deref for Owned {
    type Target = AttemptRef;

    fn deref(&self) -> &AttemptRef {
        &self.attempt_ref
    }
}

/// The answer to a write fenced by ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fenced<T> {
    Done(T),
    /// Refused: another dispatcher owns the attempt now (or its slot is
    /// gone). The caller must stop acting for it, leaving its machine and
    /// its job to the new owner.
    Lost,
}

/// What [`Store::finish_attempt`] did with a current attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The job's status now.
    pub status: JobStatus,
    /// What the attempt logged, read in the same step.
    pub log: crate::logs::LogSummary,
}

impl Fenced<Option<Finished>> {
    /// Only the job's new status, for a caller that ignores the log.
    pub fn status(self) -> Fenced<Option<JobStatus>> {
        match self {
            Fenced::Done(finished) => Fenced::Done(finished.map(|f| f.status)),
            Fenced::Lost => Fenced::Lost,
        }
    }
}

/// What [`Store::record_machine`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Recorded {
        /// The job's cancel was requested: stop the machine.
        cancel_requested: bool,
    },
    /// The attempt is no longer current (its job moved on).
    Stale,
}

/// What [`Store::claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// A job moved to `starting`; the caller must see it through.
    Claimed { job: Box<Job>, attempt: Owned },
    /// Every machine slot is taken.
    Full,
    /// Nothing queued. `next_due_in` says when a scheduled job comes due.
    Empty { next_due_in: Option<Duration> },
}

/// How to store a new job besides its spec.
#[derive(Clone, Debug, Default)]
pub struct EnqueueOptions {
    pub delay: Duration,
    /// Receives one POST with the final job view.
    pub callback_url: Option<String>,
    pub idempotency: Option<Idempotency>,
    /// Stored apart from the job and never shown; see [`Secrets`].
    pub secrets: Secrets,
    /// Concurrency key, singleton, debounce ([`crate::flow`]).
    pub flow: FlowOptions,
    /// Tags, expiry, OOM ladder, parent ([`crate::run_options`]).
    pub run: crate::RunOptions,
}

#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    /// Identifies the request, so a different one under the same key is
    /// told apart from a repeat.
    pub request_hash: String,
    /// How long the key is remembered.
    pub ttl: Duration,
}

/// What [`Store::enqueue`] did.
#[derive(Debug)]
pub enum Enqueued {
    Created(Box<Job>),
    /// The same request was submitted before under this idempotency key.
    Existing(JobId),
    /// Another request was submitted before under this idempotency key.
    Conflict(JobId),
    /// The submit joined the job waiting under its singleton key (policy
    /// `keep`, or a debounce still open: then with the submit's params)
    /// instead of storing a new one.
    Joined(Box<Job>),
}

/// Which jobs [`Store::list`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListFilter {
    pub status: Option<JobStatus>,
    pub kind: Option<crate::Kind>,
    /// Only jobs older than this one (the previous page's cursor).
    pub after: Option<JobId>,
    /// Only this batch's members (with `status`, not with `kind`).
    pub batch: Option<crate::fan_in::BatchId>,
    pub tag: Option<crate::Tag>,
    /// Only the children of this job.
    pub parent: Option<JobId>,
}

/// What [`Store::stats`] counts.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Stats {
    pub by_status: BTreeMap<JobStatus, u64>,
    pub queued_by_kind: BTreeMap<String, u64>,
    /// Attempts holding a machine slot.
    pub in_flight: u64,
    /// Jobs that reached a final status in the last hour (throughput).
    pub finished_last_hour: u64,
}

/// One page of jobs, newest first.
#[derive(Debug)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// The cursor of the next page, when there may be one.
    pub next: Option<JobId>,
}

/// What the handler returned, as the runner reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    Result(Value),
    Error {
        message: String,
        permanent: bool,
    },
    /// The runner's own guard stopped the handler at the job's timeout.
    TimedOut {
        message: String,
    },
}

/// What kind of report an attempt has, as the supervisor reads it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Result,
    Error,
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    Alive,
    CancelRequested,
    /// The attempt is no longer current: stop working, write nothing.
    Stale,
}

/// An attempt a reaper took over from a dead (or departing) dispatcher.
#[derive(Debug)]
pub struct TakeOver {
    pub job_id: JobId,
    pub attempt: u32,
    /// The job, unless its record is gone (purged).
    pub job: Option<Box<Job>>,
    /// Whether the attempt is still the job's current one (then the new
    /// owner supervises it; otherwise it only cleans up its machine).
    pub current: bool,
    /// The attempt as its new owner holds it.
    pub owned: Owned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelResult {
    Cancelled,
    /// The job is on a machine; its supervisor will stop it.
    Cancelling,
    AlreadyFinished,
    Missing,
}

/// What a retry by hand changes ([`Store::retry`]); nothing by default.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RetryOverrides {
    /// The whole machine spec of the next attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<crate::MachineSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryResult {
    Queued,
    NotFinished,
    Missing,
    /// The job had secrets, deleted when it finished: submit it again.
    SecretsGone,
}

/// Connection settings of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub address: StoreAddress,
    /// The only CA trusted for a TLS address, when given.
    pub ca_cert: Option<CaCert>,
    pub namespace: String,
    /// A command not answered within this fails instead of hanging.
    pub command_timeout: Duration,
}

impl StoreConfig {
    pub fn new(address: StoreAddress) -> Self {
        Self {
            address,
            ca_cert: None,
            namespace: "jobs".into(),
            command_timeout: Duration::from_secs(5),
        }
    }
}

/// Shared by every script (helpers, key builders, the `TRANSITIONS` table
/// of the job state machine); each script is this, then its own body.
pub const PRELUDE: &str = include_str!("scripts/prelude.lua");

/// Batches and dependencies (`scripts/fan_in.lua`): a listener on every
/// status change, so it goes into every script, whichever moves a job.
const FAN_IN: &str = include_str!("scripts/fan_in.lua");

/// Flow control's part of the claim, enqueue, release and cancel
/// (`scripts/flow.lua`, [`crate::flow`]).
const FLOW: &str = include_str!("scripts/flow.lua");

/// Run management (`scripts/run_options.lua`): tags, expiry, the OOM
/// ladder and children, kept by the scripts that store, claim, finish and
/// purge jobs.
const RUN_OPTIONS: &str = include_str!("scripts/run_options.lua");

/// A script body behind the [`PRELUDE`], [`FAN_IN`], [`FLOW`] and
/// [`RUN_OPTIONS`]: every script gets them all, so none can forget one.
pub(crate) fn with_prelude(body: &str) -> Script {
    Script::from_lua(format!(
        "{PRELUDE}\n{FAN_IN}\n{FLOW}\n{RUN_OPTIONS}\n{body}"
    ))
}

pub(crate) struct Scripts {
    enqueue: Script,
    claim: Script,
    record_machine: Script,
    start_attempt: Script,
    heartbeat: Script,
    report: Script,
    progress: Script,
    finish_attempt: Script,
    release: Script,
    renew: Script,
    take_over: Script,
    hand_back: Script,
    purge: Script,
    pub(crate) advance_schedule: Script,
    pub(crate) create_schedule: Script,
    cancel: Script,
    retry: Script,
    pub(crate) enqueue_child: Script,
    stats: Script,
    confirm: Script,
    secrets: Script,
    pub(crate) submit: Script,
}

impl Scripts {
    fn load() -> Self {
        Self {
            enqueue: with_prelude(include_str!("scripts/enqueue.lua")),
            claim: with_prelude(include_str!("scripts/claim.lua")),
            record_machine: with_prelude(include_str!("scripts/record_machine.lua")),
            start_attempt: with_prelude(include_str!("scripts/start_attempt.lua")),
            heartbeat: with_prelude(include_str!("scripts/heartbeat.lua")),
            report: with_prelude(include_str!("scripts/report.lua")),
            progress: with_prelude(include_str!("scripts/progress.lua")),
            finish_attempt: with_prelude(include_str!("scripts/finish_attempt.lua")),
            release: with_prelude(include_str!("scripts/release.lua")),
            renew: with_prelude(include_str!("scripts/renew.lua")),
            take_over: with_prelude(include_str!("scripts/take_over.lua")),
            hand_back: with_prelude(include_str!("scripts/hand_back.lua")),
            purge: with_prelude(include_str!("scripts/purge.lua")),
            advance_schedule: with_prelude(include_str!("scripts/advance_schedule.lua")),
            create_schedule: with_prelude(include_str!("scripts/create_schedule.lua")),
            cancel: with_prelude(include_str!("scripts/cancel.lua")),
            retry: with_prelude(include_str!("scripts/retry.lua")),
            enqueue_child: with_prelude(&format!(
                "{}\n{}\n{}",
                include_str!("scripts/child_fence.lua"),
                include_str!("scripts/enqueue_child.lua"),
                include_str!("scripts/enqueue.lua")
            )),
            stats: with_prelude(include_str!("scripts/stats.lua")),
            confirm: with_prelude(include_str!("scripts/confirm.lua")),
            secrets: with_prelude(include_str!("scripts/secrets.lua")),
            // A batch a running job enqueues is fenced like a child.
            submit: with_prelude(&format!(
                "{}\n{}",
                include_str!("scripts/child_fence.lua"),
                include_str!("scripts/submit.lua")
            )),
        }
    }
}

/// Cheap to clone (every HTTP request clones one): the client is a handle
/// and the rest is shared.
#[derive(Clone)]
pub struct Store {
    pub(crate) client: Client,
    fred_config: Arc<Config>,
    config: Arc<StoreConfig>,
    prefix: Arc<str>,
    pub(crate) scripts: Arc<Scripts>,
}

impl Store {
    /// Connects and checks the server answers. The client reconnects by
    /// itself, with backoff, after the server restarts.
    pub async fn connect(config: StoreConfig) -> Result<Self> {
        let mut fred_config = config.address.fred_config();
        if config.address.tls {
            fred_config.tls = Some(tls_config(config.ca_cert.as_ref()));
        }
        let client = builder(&fred_config, &config).build()?;
        client.init().await?;
        Ok(Self {
            client,
            fred_config: Arc::new(fred_config),
            prefix: format!("{{{}}}:", config.namespace).into(),
            config: Arc::new(config),
            scripts: Arc::new(Scripts::load()),
        })
    }

    /// A separate connection for pub/sub (a subscribed connection can run
    /// no other command).
    pub async fn subscriber(&self) -> Result<SubscriberClient> {
        let subscriber = builder(&self.fred_config, &self.config).build_subscriber_client()?;
        subscriber.init().await?;
        Ok(subscriber)
    }

    /// The underlying client, for a command the store does not wrap
    /// (tools, and tests probing what a store user may do).
    pub fn raw_client(&self) -> &Client {
        &self.client
    }

    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    pub fn events_channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    pub async fn ping(&self) -> Result<()> {
        self.client.ping::<()>(None).await?;
        Ok(())
    }

    pub async fn quit(&self) {
        let _ = self.client.quit().await;
    }

    /// Stores a new job: `queued`, or `scheduled` when `delay` is non-zero.
    /// With an idempotency key, a repeat of the same request returns the
    /// first job and a different request under the same key is refused.
    pub async fn enqueue(
        &self,
        id: JobId,
        spec: &JobSpec,
        options: &EnqueueOptions,
    ) -> Result<Enqueued> {
        let args = enqueue_args(id, spec, options)?;
        let text: String = self.run(&self.scripts.enqueue, args).await?;
        match enqueued(&text)? {
            EnqueueAnswer::Stored(enqueued) => Ok(enqueued),
            EnqueueAnswer::Stale => Err(unexpected("enqueue", &text)),
        }
    }

    pub async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let fields: Fields = self.client.hgetall(self.job_key(id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(Job::from_fields(&fields)?))
    }

    /// Newest first, optionally only those in `status` and/or of `kind`,
    /// with `tag`, or children of `parent`. `after` is the last id of the
    /// previous page: pages are stable while jobs are added, since ids
    /// only grow. With a tag or a parent, that index is read and the other
    /// filters are applied to its `limit` jobs, so a page may hold fewer
    /// than `limit` jobs while `next` says there may be more.
    pub async fn list(&self, filter: &ListFilter, limit: usize) -> Result<Page> {
        let index = filter.index(&self.prefix);
        let max = match filter.after {
            Some(after) => format!("({after}"),
            None => "+".to_string(),
        };
        let limit = limit.max(1);
        let ids: Vec<String> = self
            .client
            .zrevrangebylex(index, max, "-", Some((0, limit as i64)))
            .await?;
        let pipeline = self.client.pipeline();
        for id in &ids {
            let _: () = pipeline.hgetall(format!("{}job:{id}", self.prefix)).await?;
        }
        let records: Vec<Fields> = if ids.is_empty() {
            Vec::new()
        } else {
            pipeline.all().await?
        };
        // A job removed between the two reads is simply left out.
        let jobs = records
            .iter()
            .filter(|fields| !fields.is_empty())
            .map(|fields| Job::from_fields(fields).map_err(StoreError::from))
            .filter(|job| job.as_ref().map_or(true, |job| filter.matches(job)))
            .collect::<Result<Vec<_>>>()?;
        let next = (ids.len() == limit)
            .then(|| ids.last().and_then(|id| id.parse().ok()))
            .flatten();
        Ok(Page { jobs, next })
    }

    /// Jobs per status, queued jobs per kind, machines in flight and the
    /// last hour's throughput, in one round trip: the gauges of `/metrics`
    /// and the dashboard's summary, right across dispatchers.
    pub async fn stats(&self) -> Result<Stats> {
        let statuses = JobStatus::ALL.iter().map(|s| s.to_string()).collect();
        let text: String = self.run(&self.scripts.stats, statuses).await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Takes the next job if a machine slot is free; see [`Claim`].
    /// `kind_caps` is a JSON object of per-kind machine caps (`{}` for none).
    pub async fn claim(
        &self,
        max_in_flight: u32,
        kind_caps: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            claimed: Option<Fields>,
            #[serde(default)]
            full: bool,
            #[serde(default)]
            next_due_in_ms: Option<f64>,
            #[serde(default)]
            epoch: u64,
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let args = vec![
            max_in_flight.to_string(),
            owner.to_string(),
            lease.as_millis().to_string(),
            token.clone(),
            kind_caps.to_string(),
        ];
        let text: String = self.run(&self.scripts.claim, args).await?;
        let answer: Answer = serde_json::from_str(&text)?;
        if let Some(fields) = answer.claimed {
            let job = Job::from_fields(&fields)?;
            let attempt = AttemptRef {
                job_id: job.id,
                attempt: job.attempts.last().map_or(1, |a| a.number),
                token,
            };
            return Ok(Claim::Claimed {
                job: Box::new(job),
                attempt: Owned {
                    attempt_ref: attempt,
                    epoch: answer.epoch,
                },
            });
        }
        if answer.full {
            return Ok(Claim::Full);
        }
        Ok(Claim::Empty {
            next_due_in: answer
                .next_due_in_ms
                .map(|ms| Duration::from_millis(ms as u64)),
        })
    }

    /// Records the machine booted (or adopted) for an attempt.
    pub async fn record_machine(
        &self,
        a: &Owned,
        machine_id: &str,
        region: &str,
    ) -> Result<Fenced<Recorded>> {
        let mut args = owned_args(a);
        args.extend([machine_id.to_string(), region.to_string()]);
        let answer: String = self.run(&self.scripts.record_machine, args).await?;
        Ok(match answer.as_str() {
            "lost" => Fenced::Lost,
            "stale" => Fenced::Done(Recorded::Stale),
            "recorded" | "cancel" => Fenced::Done(Recorded::Recorded {
                cancel_requested: answer == "cancel",
            }),
            other => return Err(unexpected("record_machine", other)),
        })
    }

    /// Confirms `a` is still the caller's (and extends its lease) right
    /// before a Machines API call with side effects. `Done(true)` when the
    /// job's cancel was requested meanwhile.
    pub async fn confirm(&self, a: &Owned, lease: Duration) -> Result<Fenced<bool>> {
        let args = vec![
            a.job_id.to_string(),
            a.attempt.to_string(),
            a.epoch.to_string(),
            lease.as_millis().to_string(),
        ];
        let answer: String = self.run(&self.scripts.confirm, args).await?;
        Ok(match answer.as_str() {
            "lost" => Fenced::Lost,
            "owned" => Fenced::Done(false),
            "cancel" => Fenced::Done(true),
            other => return Err(unexpected("confirm", other)),
        })
    }

    /// The runner claims its attempt (`starting` → `running`) and gets the
    /// job. `None` when the attempt is no longer current.
    pub async fn start_attempt(&self, a: &AttemptRef) -> Result<Option<Job>> {
        let text: Option<String> = self
            .run(&self.scripts.start_attempt, attempt_args(a))
            .await?;
        text.map(|t| job_from_json(&t)).transpose()
    }

    /// The job's secrets, for the runner of the current attempt only.
    /// `None` when the attempt is no longer current.
    pub async fn secrets(&self, a: &AttemptRef) -> Result<Option<Secrets>> {
        let text: Option<String> = self.run(&self.scripts.secrets, attempt_args(a)).await?;
        Ok(match text {
            None => None,
            Some(text) if text.is_empty() => Some(Secrets::default()),
            Some(text) => Some(Secrets(serde_json::from_str(&text)?)),
        })
    }

    pub async fn heartbeat(&self, a: &AttemptRef) -> Result<Heartbeat> {
        let answer: i64 = self.run(&self.scripts.heartbeat, attempt_args(a)).await?;
        Ok(match answer {
            -1 => Heartbeat::Stale,
            1 => Heartbeat::CancelRequested,
            0 => Heartbeat::Alive,
            other => return Err(unexpected("heartbeat", &other.to_string())),
        })
    }

    /// Records the handler's result or error. `false` when the attempt is
    /// no longer current or already reported.
    pub async fn report(&self, a: &AttemptRef, report: &Report) -> Result<bool> {
        let mut args = attempt_args(a);
        match report {
            Report::Result(value) => args.extend(["result".into(), value.to_string(), "0".into()]),
            Report::Error { message, permanent } => args.extend([
                "error".into(),
                message.clone(),
                if *permanent { "1" } else { "0" }.into(),
            ]),
            Report::TimedOut { message } => {
                args.extend(["timed_out".into(), message.clone(), "0".into()])
            }
        }
        let recorded: i64 = self.run(&self.scripts.report, args).await?;
        yes_or_no("report", recorded)
    }

    /// Records the handler's progress (`percent` is clamped to 0..=100).
    /// `false` when the attempt is no longer current.
    pub async fn progress(&self, a: &AttemptRef, percent: u8, message: &str) -> Result<bool> {
        let mut args = attempt_args(a);
        args.extend([percent.min(100).to_string(), message.to_string()]);
        let recorded: i64 = self.run(&self.scripts.progress, args).await?;
        yes_or_no("progress", recorded)
    }

    /// What the runner reported for this attempt, read from the record
    /// (the truth; pub/sub messages may be missed).
    pub async fn report_kind(&self, a: &AttemptRef) -> Result<Option<ReportKind>> {
        let field = format!("a:{}:report", a.attempt);
        let kind: Option<String> = self.client.hget(self.job_key(a.job_id), field).await?;
        Ok(kind.as_deref().and_then(report_kind))
    }

    /// Re-reads what a supervisor may have missed while events were lost
    /// (the event hub lagged): the runner's report and whether the job's
    /// cancel was requested, in one round trip.
    pub async fn missed_signals(&self, a: &AttemptRef) -> Result<(Option<ReportKind>, bool)> {
        let fields = [format!("a:{}:report", a.attempt), "cancel_requested".into()];
        let (report, cancel): (Option<String>, Option<String>) = self
            .client
            .hmget(self.job_key(a.job_id), fields.to_vec())
            .await?;
        Ok((report.as_deref().and_then(report_kind), cancel.is_some()))
    }

    /// Closes an attempt and moves the job on. Returns the job's new
    /// status and the attempt's log summary, or `None` when the attempt was no longer current. A job
    /// whose cancel was requested ends `cancelled` unless the attempt
    /// succeeded, whatever `outcome` says.
    pub async fn finish_attempt(
        &self,
        a: &Owned,
        outcome: Outcome,
        exit_code: Option<i32>,
        error: Option<&str>,
        retry_delay: Duration,
    ) -> Result<Fenced<Option<Finished>>> {
        let mut args = owned_args(a);
        args.extend([
            outcome.to_string(),
            exit_code.map(|c| c.to_string()).unwrap_or_default(),
            error.unwrap_or_default().to_string(),
            retry_delay.as_millis().to_string(),
        ]);
        let answer: String = self.run(&self.scripts.finish_attempt, args).await?;
        match answer.as_str() {
            "lost" => Ok(Fenced::Lost),
            "stale" => Ok(Fenced::Done(None)),
            json => {
                #[derive(Deserialize)]
                struct Answer {
                    status: String,
                    log: crate::logs::LogSummary,
                }
                let answer: Answer =
                    serde_json::from_str(json).map_err(|_| unexpected("finish_attempt", json))?;
                Ok(Fenced::Done(Some(Finished {
                    status: answer.status.parse()?,
                    log: answer.log,
                })))
            }
        }
    }

    /// Frees the attempt's machine slot once its machine is destroyed.
    pub async fn release(&self, a: &Owned) -> Result<Fenced<()>> {
        let args = vec![
            a.job_id.to_string(),
            a.attempt.to_string(),
            a.epoch.to_string(),
        ];
        let freed: i64 = self.run(&self.scripts.release, args).await?;
        Ok(match freed {
            -1 => Fenced::Lost,
            0 | 1 => Fenced::Done(()),
            other => return Err(unexpected("release", &other.to_string())),
        })
    }

    /// Extends the leases on `attempts` (`(job, attempt, epoch)`) in one
    /// round trip, and returns for each how long ago its runner last
    /// heartbeat (or the attempt was claimed): `None` when the caller no
    /// longer owns it (released, or taken over by another dispatcher).
    pub async fn renew(
        &self,
        attempts: &[(JobId, u32, u64)],
        lease: Duration,
    ) -> Result<Vec<Option<Duration>>> {
        #[derive(serde::Serialize)]
        struct Held {
            member: String,
            // A string: the script compares it with the stored epoch.
            epoch: String,
        }
        #[derive(serde::Serialize)]
        struct Args {
            lease_ms: u128,
            attempts: Vec<Held>,
        }
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let args = Args {
            lease_ms: lease.as_millis(),
            attempts: attempts
                .iter()
                .map(|&(id, n, epoch)| Held {
                    member: member(id, n),
                    epoch: epoch.to_string(),
                })
                .collect(),
        };
        let args = vec![serde_json::to_string(&args)?];
        let ages: Vec<i64> = self.run(&self.scripts.renew, args).await?;
        Ok(ages
            .into_iter()
            .map(|ms| (ms >= 0).then(|| Duration::from_millis(ms as u64)))
            .collect())
    }

    /// In-flight attempts whose lease ran out by this machine's clock
    /// (candidates: [`Store::take_over`] decides by the server's clock).
    pub async fn expired_leases(&self, limit: usize) -> Result<Vec<(JobId, u32)>> {
        let now = chrono::Utc::now().timestamp_millis();
        let members: Vec<String> = self
            .client
            .zrangebyscore(
                self.in_flight_key(),
                "-inf",
                now,
                false,
                Some((0, limit as i64)),
            )
            .await?;
        Ok(members.iter().filter_map(|m| parse_member(m)).collect())
    }

    /// Takes over an attempt whose lease expired; `None` when another
    /// dispatcher was first or the lease was renewed meanwhile.
    pub async fn take_over(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<TakeOver>> {
        #[derive(Deserialize)]
        struct Answer {
            current: bool,
            #[serde(default)]
            job: Option<Fields>,
            epoch: u64,
        }
        let args = vec![
            member(id, attempt),
            owner.to_string(),
            lease.as_millis().to_string(),
        ];
        let text: Option<String> = self.run(&self.scripts.take_over, args).await?;
        let Some(text) = text else { return Ok(None) };
        let answer: Answer = serde_json::from_str(&text)?;
        let token = answer
            .job
            .as_ref()
            .and_then(|f| f.get("token").cloned())
            .unwrap_or_default();
        let job = answer
            .job
            .map(|fields| Job::from_fields(&fields))
            .transpose()?;
        Ok(Some(TakeOver {
            job_id: id,
            attempt,
            job: job.map(Box::new),
            current: answer.current,
            owned: Owned {
                attempt_ref: AttemptRef {
                    job_id: id,
                    attempt,
                    token,
                },
                epoch: answer.epoch,
            },
        }))
    }

    /// Lets the lease on an attempt expire now so a peer takes it over.
    pub async fn hand_back(&self, a: &Owned) -> Result<Fenced<()>> {
        let args = vec![
            a.job_id.to_string(),
            a.attempt.to_string(),
            a.epoch.to_string(),
        ];
        let handed: i64 = self.run(&self.scripts.hand_back, args).await?;
        Ok(if yes_or_no("hand_back", handed)? {
            Fenced::Done(())
        } else {
            Fenced::Lost
        })
    }

    /// Which of these attempts hold a machine slot (the sweeper's
    /// question), in order. One ZMSCORE, so the caller keeps batches to a
    /// few hundred.
    pub async fn holds_slots(&self, attempts: &[(JobId, u32)]) -> Result<Vec<bool>> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let members: Vec<String> = attempts.iter().map(|&(id, n)| member(id, n)).collect();
        let scores: Vec<Option<f64>> = self.client.zmscore(self.in_flight_key(), members).await?;
        Ok(scores.iter().map(Option::is_some).collect())
    }

    /// Removes up to `limit` jobs that finished more than `retention` ago.
    pub async fn purge(&self, retention: Duration, limit: usize) -> Result<u64> {
        let args = vec![retention.as_millis().to_string(), limit.to_string()];
        self.run(&self.scripts.purge, args).await
    }

    pub async fn cancel(&self, id: JobId) -> Result<CancelResult> {
        let answer: String = self.run(&self.scripts.cancel, vec![id.to_string()]).await?;
        Ok(match answer.as_str() {
            "cancelled" => CancelResult::Cancelled,
            "cancelling" => CancelResult::Cancelling,
            "finished" => CancelResult::AlreadyFinished,
            "missing" => CancelResult::Missing,
            other => return Err(unexpected("cancel", other)),
        })
    }

    /// Queues a failed, cancelled or expired job again, with `overrides`
    /// (already validated) applied.
    pub async fn retry(&self, id: JobId, overrides: &RetryOverrides) -> Result<RetryResult> {
        let args = vec![id.to_string(), serde_json::to_string(overrides)?];
        let answer: String = self.run(&self.scripts.retry, args).await?;
        Ok(match answer.as_str() {
            "queued" => RetryResult::Queued,
            "not_finished" => RetryResult::NotFinished,
            "secrets_gone" => RetryResult::SecretsGone,
            "missing" => RetryResult::Missing,
            other => return Err(unexpected("retry", other)),
        })
    }

    /// A key in this store's namespace.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn in_flight_key(&self) -> String {
        format!("{}in_flight", self.prefix)
    }

    fn job_key(&self, id: JobId) -> String {
        format!("{}job:{id}", self.prefix)
    }

    /// Runs a transition script. The key prefix is its one declared key
    /// (`KEYS[1]`, the prelude's `P`): it carries the `{namespace}` hash
    /// tag every key shares, so a cluster client sends the script to the
    /// node owning that slot. It also stays first in ARGV, where the
    /// scripts' numbered arguments have always started.
    pub(crate) async fn run<R: FromValue>(
        &self,
        script: &Script,
        args: Vec<impl Into<fred::types::Value>>,
    ) -> Result<R> {
        // Values, not strings: a log batch's entries go out as shared
        // bytes, without a copy per call.
        let mut all: Vec<fred::types::Value> = Vec::with_capacity(args.len() + 1);
        all.push(self.prefix.to_string().into());
        all.extend(args.into_iter().map(Into::into));
        Ok(script
            .evalsha_with_reload(&self.client, vec![self.prefix.to_string()], all)
            .await?)
    }

    /// Blocks until every write this client made so far reached at least
    /// `replicas` replicas (`WAIT`), or `timeout` passed; returns how many
    /// acknowledged. Sent to the node owning the namespace's slot, the
    /// one that took the writes.
    pub async fn wait_for_replicas(&self, replicas: u32, timeout: Duration) -> Result<u32> {
        let slot = fred::util::redis_keyslot(self.prefix.as_bytes());
        let command = fred::types::CustomCommand::new_static(
            "WAIT",
            fred::types::ClusterHash::Custom(slot),
            true,
        );
        let acknowledged: i64 = self
            .client
            .custom(
                command,
                vec![i64::from(replicas), timeout.as_millis() as i64],
            )
            .await?;
        Ok(u32::try_from(acknowledged).unwrap_or(0))
    }
}

fn builder(fred_config: &Config, config: &StoreConfig) -> Builder {
    let mut builder = Builder::from_config(fred_config.clone());
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|p| p.default_command_timeout = config.command_timeout)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    builder
}

fn attempt_args(a: &AttemptRef) -> Vec<String> {
    vec![a.job_id.to_string(), a.attempt.to_string(), a.token.clone()]
}

/// [`attempt_args`] followed by the owner's epoch.
fn owned_args(a: &Owned) -> Vec<String> {
    let mut args = attempt_args(a);
    args.push(a.epoch.to_string());
    args
}

/// A script answered something it never answers: the scripts and this
/// code disagree, which must not pass silently.
pub(crate) fn unexpected(script: &str, answer: &str) -> StoreError {
    StoreError::Corrupt(InvalidValue(format!(
        "unexpected {script} answer {answer:?}"
    )))
}

/// A script's 1 (yes) or 0 (no); anything else is [`unexpected`].
pub(crate) fn yes_or_no(script: &str, answer: i64) -> Result<bool> {
    match answer {
        1 => Ok(true),
        0 => Ok(false),
        other => Err(unexpected(script, &other.to_string())),
    }
}

/// An `in_flight` member: `"{id}/{attempt}"` (`member_of` in prelude.lua).
fn member(id: JobId, attempt: u32) -> String {
    format!("{id}/{attempt}")
}

/// Reads an `in_flight` member back ([`member`]).
fn parse_member(member: &str) -> Option<(JobId, u32)> {
    let (id, attempt) = member.rsplit_once('/')?;
    Some((id.parse().ok()?, attempt.parse().ok()?))
}

/// A stored `a:{n}:report` field read back.
fn report_kind(stored: &str) -> Option<ReportKind> {
    match stored {
        "result" => Some(ReportKind::Result),
        "error" => Some(ReportKind::Error),
        "timed_out" => Some(ReportKind::TimedOut),
        _ => None,
    }
}

fn job_from_json(text: &str) -> Result<Job> {
    let fields: Fields = serde_json::from_str(text)?;
    Ok(Job::from_fields(&fields)?)
}

/// What `enqueue.lua` (after `enqueue_child.lua`, for a child) answered.
pub(crate) enum EnqueueAnswer {
    Stored(Enqueued),
    /// The parent's attempt is not current: nothing stored.
    Stale,
}

/// `enqueue.lua`'s one argument (a child's fence follows it, for
/// `enqueue_child.lua`).
pub(crate) fn enqueue_args(
    id: JobId,
    spec: &JobSpec,
    options: &EnqueueOptions,
) -> Result<Vec<String>> {
    /// enqueue.lua's one argument: every field named, optional ones
    /// left out rather than sent empty.
    #[derive(serde::Serialize)]
    struct EnqueueArgs<'a> {
        id: String,
        kind: &'a str,
        /// JSON text, stored as given (so are `backoff`, `machine`
        /// and `secrets`): decoding and re-encoding in Lua would
        /// reformat it and round large integers.
        params: String,
        priority: i32,
        max_attempts: u32,
        timeout_secs: u64,
        backoff: String,
        machine: String,
        delay_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        callback_url: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        idempotency: Option<IdempotencyArgs<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        secrets: Option<String>,
        flow: &'a crate::flow::FlowOptions,
        run: &'a crate::RunOptions,
    }
    #[derive(serde::Serialize)]
    struct IdempotencyArgs<'a> {
        key: &'a str,
        request_hash: &'a str,
        ttl_ms: u64,
    }
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let args = EnqueueArgs {
        id: id.to_string(),
        kind: spec.kind.as_str(),
        params: spec.params.to_string(),
        priority: spec.priority,
        max_attempts: spec.max_attempts,
        timeout_secs: spec.timeout_secs,
        backoff: serde_json::to_string(&spec.backoff)?,
        machine: serde_json::to_string(&spec.machine)?,
        delay_ms: millis(options.delay),
        callback_url: options.callback_url.as_deref(),
        idempotency: options.idempotency.as_ref().map(|i| IdempotencyArgs {
            key: &i.key,
            request_hash: &i.request_hash,
            ttl_ms: millis(i.ttl),
        }),
        secrets: if options.secrets.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&options.secrets.0)?)
        },
        flow: &options.flow,
        run: &options.run,
    };
    Ok(vec![serde_json::to_string(&args)?])
}

/// Reads `enqueue.lua`'s answer.
pub(crate) fn enqueued(text: &str) -> Result<EnqueueAnswer> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        job: Option<Fields>,
        #[serde(default)]
        existing: Option<String>,
        #[serde(default)]
        conflict: Option<String>,
        #[serde(default)]
        joined: Option<Fields>,
        #[serde(default)]
        stale: bool,
    }
    let answer: Answer = serde_json::from_str(text)?;
    let parse_id = |text: String| text.parse::<JobId>().map_err(StoreError::from);
    if answer.stale {
        return Ok(EnqueueAnswer::Stale);
    }
    if let Some(fields) = answer.job {
        return Ok(EnqueueAnswer::Stored(Enqueued::Created(Box::new(
            Job::from_fields(&fields)?,
        ))));
    }
    if let Some(fields) = answer.joined {
        return Ok(EnqueueAnswer::Stored(Enqueued::Joined(Box::new(
            Job::from_fields(&fields)?,
        ))));
    }
    if let Some(first) = answer.existing {
        return Ok(EnqueueAnswer::Stored(Enqueued::Existing(parse_id(first)?)));
    }
    match answer.conflict {
        Some(first) => Ok(EnqueueAnswer::Stored(Enqueued::Conflict(parse_id(first)?))),
        None => Err(unexpected("enqueue", text)),
    }
}
