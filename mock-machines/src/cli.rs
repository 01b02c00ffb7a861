//! The `mock-machines` command line (placeholder until the flags land).

/// Entry point of the `mock-machines` binary.
pub fn main() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
