//! The program booted in every job machine, with the built-in demo
//! handlers (`echo`, `sleep`, `fail`, `crash`).
fn main() {
    runner::Runner::with_demo_handlers().main()
}
