//! Fly's region codes: a job's `machine.region` must be one of them, so a
//! typo is a 422 at submit time rather than a failed machine create on
//! every attempt. The list is Fly's published one (`fly platform
//! regions`, fly.io/docs/reference/regions); `--regions` (`ALLOWED_REGIONS`)
//! replaces it, for a region added after this release or to keep jobs in
//! a few.

pub const FLY_REGIONS: [&str; 35] = [
    "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra", "gdl",
    "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord", "otp", "phx",
    "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
];

/// The regions jobs may name: `configured` when given, else Fly's list.
pub fn allowed(configured: &[String]) -> Vec<String> {
    let configured: Vec<String> = configured
        .iter()
        .map(|r| r.trim().to_ascii_lowercase())
        .filter(|r| !r.is_empty())
        .collect();
    if configured.is_empty() {
        FLY_REGIONS.iter().map(|r| r.to_string()).collect()
    } else {
        configured
    }
}
