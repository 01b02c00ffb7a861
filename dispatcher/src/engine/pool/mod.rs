//! The warm pool: machines created ahead, booted once and stopped, so an
//! attempt pays a start (well under a second, on the machine's own rate
//! limit) instead of a create (seconds, on the app's one create per
//! second).
//!
//! - [`PoolSpec`]: one pool, from `--warm-pool` (`N` for the default
//!   machine size, `cpu_kind:cpus:memory_mb[@region]=N` for others). A
//!   pool is keyed by what a machine cannot change after its create: guest
//!   size and region ([`PoolSpec::key`]); the image is checked at claim
//!   time, so after a deploy old machines are replaced one at a time and a
//!   job never runs old code.
//! - [`source`]: the supervisor's `MachineSource` step: claim and start a
//!   pooled machine (or resume one after a takeover), and after the
//!   attempt return it to the pool or destroy it.
//! - [`upkeep`]: every dispatcher fills its pools up to their targets
//!   (reservations in the store keep the total right across dispatchers),
//!   and retires machines of an old image or idle beyond the target.
//!
//! A pooled machine's environment names no attempt (`JOB_POOLED=1`): the
//! runner asks the store which attempt its `FLY_MACHINE_ID` was claimed
//! for, and the job's `machine.env` comes from the job's record, so jobs
//! with different variables share one pool. State lives in the store
//! ([`jobs::pool`]).

pub mod source;
pub mod upkeep;

use jobs::Job;

use crate::configuration::LaunchSettings;

/// One warm pool: `size` stopped machines of this guest in this region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub cpu_kind: String,
    pub cpus: u32,
    pub memory_mb: u32,
    /// `None`: the API's choice (where the dispatcher's default jobs go).
    pub region: Option<String>,
    pub size: u32,
}

impl PoolSpec {
    /// The pool's key in the store and in its machines' names, e.g.
    /// `shared-1x-256-any`.
    pub fn key(&self) -> String {
        format!(
            "{}-{}x-{}-{}",
            self.cpu_kind,
            self.cpus,
            self.memory_mb,
            self.region.as_deref().unwrap_or("any")
        )
    }

    /// Whether `job` can run on a machine of this pool: same guest and
    /// region, and the runner's default image.
    fn fits(&self, job: &Job, launch: &LaunchSettings) -> bool {
        let spec = &job.machine;
        spec.image.as_ref().is_none_or(|i| *i == launch.image)
            && spec.cpu_kind == self.cpu_kind
            && spec.cpus == self.cpus
            && spec.memory_mb == self.memory_mb
            && spec.region == self.region
    }
}

/// The pool `job` fits, if any.
pub fn pool_for<'a>(launch: &'a LaunchSettings, job: &Job) -> Option<&'a PoolSpec> {
    launch
        .pools
        .iter()
        .find(|p| p.size > 0 && p.fits(job, launch))
}

/// The target size of the pool keyed `key` (0 when no flag names it any
/// more: its machines are retired as their attempts end).
pub fn target_of(launch: &LaunchSettings, key: &str) -> u32 {
    launch
        .pools
        .iter()
        .find(|p| p.key() == key)
        .map_or(0, |p| p.size)
}

/// A pooled machine's name: `pool-{key}-{random}`. The sweeper reads the
/// pool back from it ([`pool_of_name`]).
pub fn machine_name(key: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("pool-{key}-{}", &random[..12])
}

/// The pool key in a pooled machine's name, if it is one.
pub fn pool_of_name(name: &str) -> Option<&str> {
    let (key, random) = name.strip_prefix("pool-")?.rsplit_once('-')?;
    (!key.is_empty() && random.len() == 12).then_some(key)
}

/// Parses one `--warm-pool` entry: `N` (the default machine size and
/// region) or `cpu_kind:cpus:memory_mb[@region]=N`.
pub fn parse_entry(text: &str, default: &PoolSpec) -> Result<PoolSpec, String> {
    let text = text.trim();
    let Some((shape, size)) = text.split_once('=') else {
        let size = text
            .parse()
            .map_err(|_| format!("{text:?}: expected N or cpu_kind:cpus:memory_mb[@region]=N"))?;
        return Ok(PoolSpec {
            size,
            ..default.clone()
        });
    };
    let size = size
        .trim()
        .parse()
        .map_err(|_| format!("{size:?} is not a number of machines"))?;
    let (guest, region) = match shape.split_once('@') {
        Some((guest, region)) => (guest, Some(region.trim().to_string())),
        None => (shape, None),
    };
    let parts: Vec<&str> = guest.split(':').map(str::trim).collect();
    let [cpu_kind, cpus, memory_mb] = parts[..] else {
        return Err(format!("{shape:?}: expected cpu_kind:cpus:memory_mb"));
    };
    if !matches!(cpu_kind, "shared" | "performance") {
        return Err(format!(
            "cpu kind {cpu_kind:?}: expected shared or performance"
        ));
    }
    Ok(PoolSpec {
        cpu_kind: cpu_kind.to_string(),
        cpus: cpus
            .parse()
            .map_err(|_| format!("cpus {cpus:?} is not a number"))?,
        memory_mb: memory_mb
            .parse()
            .map_err(|_| format!("memory_mb {memory_mb:?} is not a number"))?,
        region: region.filter(|r| !r.is_empty()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> PoolSpec {
        PoolSpec {
            cpu_kind: "shared".into(),
            cpus: 1,
            memory_mb: 256,
            region: None,
            size: 0,
        }
    }

    #[test]
    fn parses_entries() {
        assert_eq!(parse_entry("8", &default()).unwrap().size, 8);
        let big = parse_entry("performance:2:4096@ams=3", &default()).unwrap();
        assert_eq!(big.key(), "performance-2x-4096-ams");
        assert_eq!(big.size, 3);
        assert!(parse_entry("x", &default()).is_err());
        assert!(parse_entry("gpu:1:256=1", &default()).is_err());
        assert!(parse_entry("shared:1=1", &default()).is_err());
    }

    #[test]
    fn names_carry_the_pool() {
        let key = default().key();
        assert_eq!(pool_of_name(&machine_name(&key)), Some(key.as_str()));
        assert_eq!(pool_of_name("job-1-2"), None);
        assert_eq!(pool_of_name("pool-x"), None);
    }
}
