//! A token bucket in the store, shared by every dispatcher: the per-app
//! create budget of the Machines API (`machines::pacing`). One script
//! call reserves a token and answers how long to wait for it.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `pace:{bucket}` | hash | `tokens` (may be negative: reserved ahead), `updated` (ms); expires once full |

use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;
use serde::Serialize;

use crate::store::{Result, Store};

static PACE: LazyLock<Script> =
    LazyLock::new(|| crate::store::with_prelude(include_str!("scripts/pace.lua")));

impl Store {
    /// Reserves one token of the shared bucket `bucket` (refilled at
    /// `per_sec`, holding at most `burst`); returns the wait before it
    /// may be used.
    pub async fn pace(&self, bucket: &str, per_sec: f64, burst: f64) -> Result<Duration> {
        #[derive(Serialize)]
        struct Args<'a> {
            bucket: &'a str,
            per_sec: f64,
            burst: f64,
        }
        let args = Args {
            bucket,
            per_sec,
            burst,
        };
        let wait_ms: i64 = self.run(&PACE, vec![serde_json::to_string(&args)?]).await?;
        Ok(Duration::from_millis(wait_ms.max(0) as u64))
    }
}
