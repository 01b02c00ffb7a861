//! Creating a machine where there is room: a capacity answer from Fly
//! (out of resources, memory or quota in a region; not a rate limit) is
//! retried with backoff, then the job's next region is tried.

use std::time::Duration;

use machines::{CreateMachineRequest, Machine, MachinesClient, MachinesError};

/// Tries per region before moving on to the next one.
const TRIES_PER_REGION: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Creates `request`'s machine in its region, else in each of `fallback`
/// in turn. Errors other than capacity end it at once; when every region
/// is out of capacity, the last answer is returned.
pub async fn create<Wanted>(
    machines: &MachinesClient,
    request: &CreateMachineRequest,
    fallback: &[String],
    still_wanted: &impl Fn() -> Wanted,
) -> Result<Machine, MachinesError>
where
    Wanted: std::future::Future<Output = Option<tokio::time::Instant>>,
{
    let regions = std::iter::once(request.region.clone()).chain(fallback.iter().cloned().map(Some));
    let mut last = None;
    for region in regions {
        let request = CreateMachineRequest {
            region: region.clone(),
            ..request.clone()
        };
        for attempt in 0..TRIES_PER_REGION {
            match machines.create_guarded(&request, still_wanted).await {
                Ok(machine) => return Ok(machine),
                Err(e) if e.is_capacity() => {
                    let region = region.as_deref().unwrap_or("default");
                    crate::metrics::capacity_error(region);
                    tracing::warn!(region, error = %e, "no capacity for the machine");
                    last = Some(e);
                    if attempt + 1 < TRIES_PER_REGION {
                        let jitter = rand::random_range(0.5..1.5);
                        tokio::time::sleep(FIRST_BACKOFF.mul_f64(f64::from(1 << attempt) * jitter))
                            .await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(last.expect("at least one region was tried"))
}
