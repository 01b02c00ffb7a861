//! [`JobMachineName`]: the name of an attempt's machine,
//! `job-{id}-{attempt}`. One type for both sides of the format: the
//! supervisor names the machine it creates with it, and the sweeper reads
//! the attempt back from it (the machine summaries it lists carry no
//! metadata, only the name), so writer and parser cannot drift apart.

use std::fmt;
use std::str::FromStr;

use jobs::JobId;

const PREFIX: &str = "job-";

/// The attempt a job machine was created for. Deterministic, so a create
/// that may have happened (a lost answer, a 409) is found by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobMachineName {
    pub job: JobId,
    pub attempt: u32,
}

impl fmt::Display for JobMachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.job, self.attempt)
    }
}

/// The name is not a job machine's (another process group, a pool
/// machine, a generated name).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a job machine's name (job-{{id}}-{{attempt}})")]
pub struct NotAJobMachine(String);

impl FromStr for JobMachineName {
    type Err = NotAJobMachine;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let parsed = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(job, attempt)| Some((job.parse().ok()?, attempt.parse().ok()?)));
        match parsed {
            Some((job, attempt)) => Ok(Self { job, attempt }),
            None => Err(NotAJobMachine(name.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_reads_back_as_the_attempt_it_was_written_for() {
        let job = JobId::new();
        let name = JobMachineName { job, attempt: 3 };
        assert_eq!(name.to_string(), format!("job-{job}-3"));
        assert_eq!(name.to_string().parse(), Ok(name));
        for other in [
            format!("web-{job}-3"),
            "job-not-a-uuid-3".into(),
            format!("job-{job}"),
            format!("job-{job}-"),
            "aged-thunder-7371".into(),
        ] {
            assert!(other.parse::<JobMachineName>().is_err(), "{other}");
        }
    }
}
