//! The program booted in every job machine: the built-in demo handlers
//! (`echo`, `sleep`, `fail`, `crash`, `flaky`, `allocate`) plus command
//! mode, so any image can run jobs written in any language by configuring
//! `RUNNER_COMMANDS` or `/etc/runner.toml` (see `runner::Commands`).
fn main() {
    runner::Runner::with_demo_handlers().main()
}
