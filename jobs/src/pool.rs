//! The warm pool in the store: machines created ahead, booted once and
//! stopped, claimed by one attempt at a time.
//!
//! Each transition is one Lua script in `src/scripts/pool/` (after
//! `prelude.lua` and `pool/common.lua`, which documents the keys), called
//! with one JSON object of named parameters built from a struct here.
//!
//! ```text
//! reserve ─create, boot, stop─▶ ready ─claim─▶ in_use ─release(clean)─▶ ready
//!                                 │                  └─release(dirty)──▶ retiring ─destroy─▶ forget
//!                                 └─retire (old image, idle surplus)──▶ retiring
//! ```
//!
//! The claim records the machine on the attempt in the same step, so the
//! attempt's lease and takeover path always finds its pooled machine. The
//! runner takes its attempt with [`Store::pool_boot`], once per claim.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;
use serde::{Deserialize, Serialize};

use crate::model::JobId;
use crate::store::{AttemptRef, Result, Store, StoreError};

struct PoolScripts {
    reserve: Script,
    ready: Script,
    unreserve: Script,
    claim: Script,
    boot: Script,
    release: Script,
    retire: Script,
    forget: Script,
    known: Script,
    stats: Script,
}

static SCRIPTS: LazyLock<PoolScripts> = LazyLock::new(|| {
    let script = |body: &str| {
        crate::store::with_prelude(&format!(
            "{}\n{}",
            include_str!("scripts/pool/common.lua"),
            body
        ))
    };
    PoolScripts {
        reserve: script(include_str!("scripts/pool/reserve.lua")),
        ready: script(include_str!("scripts/pool/ready.lua")),
        unreserve: script(include_str!("scripts/pool/unreserve.lua")),
        claim: script(include_str!("scripts/pool/claim.lua")),
        boot: script(include_str!("scripts/pool/boot.lua")),
        release: script(include_str!("scripts/pool/release.lua")),
        retire: script(include_str!("scripts/pool/retire.lua")),
        forget: script(include_str!("scripts/pool/forget.lua")),
        known: script(include_str!("scripts/pool/known.lua")),
        stats: script(include_str!("scripts/pool/stats.lua")),
    }
});

/// What became of a pooled machine whose attempt ended
/// ([`Store::pool_release`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// Back in the pool, stopped, for the next attempt.
    Ready,
    /// To be destroyed (then [`Store::pool_forget`]): its attempt ended
    /// badly, its image is old, or the pool has more than its target.
    Retire,
    /// Not bound to this attempt: someone else decides its fate.
    Unknown,
}

/// The counts of one pool, across dispatchers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PoolStats {
    /// Machines the pool owns, in any state.
    pub machines: u64,
    /// Stopped and free to claim.
    pub ready: u64,
    /// Bound to an attempt.
    pub in_use: u64,
    /// Being created.
    pub warming: u64,
}

/// A machine the sweeper asks about ([`Store::pool_known`]).
#[derive(Clone, Debug, Serialize)]
pub struct PoolMachineRef {
    pub id: String,
    pub name: String,
    pub pool: String,
}

/// A pooled machine as the store records it.
#[derive(Clone, Debug, Deserialize)]
pub struct PoolRecord {
    pub pool: String,
    pub image: String,
    pub state: String,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub attempt: Option<String>,
    #[serde(default)]
    pub booted: bool,
}

impl PoolRecord {
    /// Whether the record binds the machine to this attempt.
    pub fn bound_to(&self, job: JobId, attempt: u32) -> bool {
        self.state == "in_use"
            && self.job_id.as_deref() == Some(job.to_string().as_str())
            && self.attempt.as_deref() == Some(attempt.to_string().as_str())
    }
}

impl Store {
    /// Reserves the creation of one machine named `name` for `pool`, while
    /// the pool (with the machines being created) is below `target`.
    /// The reservation lapses after `ttl` if its creator never reports.
    pub async fn pool_reserve(
        &self,
        pool: &str,
        name: &str,
        target: u32,
        ttl: Duration,
    ) -> Result<bool> {
        #[derive(Serialize)]
        struct Args<'a> {
            pool: &'a str,
            name: &'a str,
            target: u32,
            ttl_ms: u64,
        }
        let args = Args {
            pool,
            name,
            target,
            ttl_ms: ttl.as_millis() as u64,
        };
        let reserved: i64 = self.run_pool(&SCRIPTS.reserve, &args).await?;
        crate::store::yes_or_no("pool reserve", reserved)
    }

    /// A reserved machine is created, booted once and stopped: it joins
    /// the pool. `false` when the reservation lapsed (destroy it).
    pub async fn pool_ready(
        &self,
        pool: &str,
        name: &str,
        machine_id: &str,
        image: &str,
    ) -> Result<bool> {
        #[derive(Serialize)]
        struct Args<'a> {
            pool: &'a str,
            name: &'a str,
            machine_id: &'a str,
            image: &'a str,
        }
        let args = Args {
            pool,
            name,
            machine_id,
            image,
        };
        let joined: i64 = self.run_pool(&SCRIPTS.ready, &args).await?;
        crate::store::yes_or_no("pool ready", joined)
    }

    /// Drops the reservation of machine `name` that will never be ready
    /// (its create or first boot failed), so the pool refills at once.
    pub async fn pool_unreserve(&self, pool: &str, name: &str) -> Result<()> {
        #[derive(Serialize)]
        struct Args<'a> {
            pool: &'a str,
            name: &'a str,
        }
        let _: i64 = self
            .run_pool(&SCRIPTS.unreserve, &Args { pool, name })
            .await?;
        Ok(())
    }

    /// Binds a ready machine of `pool` built from `image` to the attempt
    /// and records it as the attempt's machine, atomically. `None` when
    /// none is ready or the attempt is no longer current.
    pub async fn pool_claim(
        &self,
        pool: &str,
        image: &str,
        attempt: &AttemptRef,
    ) -> Result<Option<String>> {
        #[derive(Serialize)]
        struct Args<'a> {
            pool: &'a str,
            image: &'a str,
            job_id: String,
            attempt: String,
            token: &'a str,
        }
        let args = Args {
            pool,
            image,
            job_id: attempt.job_id.to_string(),
            attempt: attempt.attempt.to_string(),
            token: &attempt.token,
        };
        self.run_pool(&SCRIPTS.claim, &args).await
    }

    /// The runner on pooled machine `machine_id` takes its attempt; `None`
    /// when the machine has none (its first boot, a second boot for the
    /// same claim, or an attempt no longer current).
    pub async fn pool_boot(&self, machine_id: &str) -> Result<Option<AttemptRef>> {
        #[derive(Serialize)]
        struct Args<'a> {
            machine_id: &'a str,
        }
        #[derive(Deserialize)]
        struct Answer {
            job_id: String,
            attempt: String,
            token: String,
        }
        let text: Option<String> = self.run_pool(&SCRIPTS.boot, &Args { machine_id }).await?;
        let Some(text) = text else { return Ok(None) };
        let answer: Answer = serde_json::from_str(&text)?;
        let corrupt = |what: &str| StoreError::Corrupt(crate::InvalidValue(what.to_string()));
        Ok(Some(AttemptRef {
            job_id: answer
                .job_id
                .parse()
                .map_err(|_| corrupt("pool record: job_id"))?,
            attempt: answer
                .attempt
                .parse()
                .map_err(|_| corrupt("pool record: attempt"))?,
            token: answer.token,
        }))
    }

    /// The attempt on pooled machine `machine_id` is over and the machine
    /// is stopped. `clean`: the runner reported and exited by itself.
    /// `image` is the current one and `target` the pool's size: machines
    /// of an old image or beyond the target are retired.
    pub async fn pool_release(
        &self,
        machine_id: &str,
        attempt: &AttemptRef,
        image: &str,
        target: u32,
        clean: bool,
    ) -> Result<Released> {
        #[derive(Serialize)]
        struct Args<'a> {
            machine_id: &'a str,
            job_id: String,
            attempt: String,
            image: &'a str,
            target: u32,
            clean: bool,
        }
        let args = Args {
            machine_id,
            job_id: attempt.job_id.to_string(),
            attempt: attempt.attempt.to_string(),
            image,
            target,
            clean,
        };
        let answer: String = self.run_pool(&SCRIPTS.release, &args).await?;
        Ok(match answer.as_str() {
            "ready" => Released::Ready,
            "retire" => Released::Retire,
            "unknown" => Released::Unknown,
            other => return Err(crate::store::unexpected("pool release", other)),
        })
    }

    /// One ready machine of `pool` to destroy: built from another image
    /// than `image`, or idle for `idle` while the pool is above `target`
    /// (or one set aside for retirement before). At most one per call.
    pub async fn pool_retire(
        &self,
        pool: &str,
        image: &str,
        target: u32,
        idle: Duration,
    ) -> Result<Option<String>> {
        #[derive(Serialize)]
        struct Args<'a> {
            pool: &'a str,
            image: &'a str,
            target: u32,
            idle_ms: u64,
        }
        let args = Args {
            pool,
            image,
            target,
            idle_ms: idle.as_millis() as u64,
        };
        self.run_pool(&SCRIPTS.retire, &args).await
    }

    /// A pooled machine is destroyed: the pool forgets it (and refills).
    pub async fn pool_forget(&self, machine_id: &str) -> Result<()> {
        #[derive(Serialize)]
        struct Args<'a> {
            machine_id: &'a str,
        }
        let _: i64 = self.run_pool(&SCRIPTS.forget, &Args { machine_id }).await?;
        Ok(())
    }

    /// The store's record of a pooled machine, if it is one.
    pub async fn pool_machine(&self, machine_id: &str) -> Result<Option<PoolRecord>> {
        let text: Option<String> = fred::interfaces::HashesInterface::hget(
            &self.client,
            self.key("pool_machines"),
            machine_id,
        )
        .await?;
        Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
    }

    /// Every pooled machine the store knows, with its record.
    pub async fn pool_machines(&self) -> Result<BTreeMap<String, PoolRecord>> {
        let all: BTreeMap<String, String> =
            fred::interfaces::HashesInterface::hgetall(&self.client, self.key("pool_machines"))
                .await?;
        all.into_iter()
            .map(|(id, text)| Ok((id, serde_json::from_str(&text)?)))
            .collect()
    }

    /// Which of `machines` a pool owns or is creating, in order.
    pub async fn pool_known(&self, machines: &[PoolMachineRef]) -> Result<Vec<bool>> {
        #[derive(Serialize)]
        struct Args<'a> {
            machines: &'a [PoolMachineRef],
        }
        if machines.is_empty() {
            return Ok(Vec::new());
        }
        let known: Vec<i64> = self.run_pool(&SCRIPTS.known, &Args { machines }).await?;
        Ok(known.into_iter().map(|k| k == 1).collect())
    }

    /// Counts per pool key.
    pub async fn pool_stats(&self) -> Result<BTreeMap<String, PoolStats>> {
        #[derive(Serialize)]
        struct Args {}
        let text: String = self.run_pool(&SCRIPTS.stats, &Args {}).await?;
        Ok(serde_json::from_str(&text)?)
    }

    async fn run_pool<R: fred::types::FromValue>(
        &self,
        script: &Script,
        args: &impl Serialize,
    ) -> Result<R> {
        self.run(script, vec![serde_json::to_string(args)?]).await
    }
}
