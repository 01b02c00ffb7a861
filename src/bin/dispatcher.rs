//! The dispatcher: `serve` in production, `dev` on a laptop, `jobs` to
//! talk to a running one.
//!
//! `dev` composes here, not in the dispatcher library, so the library (the
//! production service) does not depend on the mock Machines API.

#[path = "dispatcher/dev.rs"]
mod dev;

fn main() -> anyhow::Result<std::process::ExitCode> {
    dispatcher::cli::main(|args| Box::pin(dev::run(args)))
}
