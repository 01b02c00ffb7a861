//! The mock Machines API as a standalone server (see `mock-machines --help`).
fn main() -> anyhow::Result<()> {
    mock_machines::cli::main()
}
