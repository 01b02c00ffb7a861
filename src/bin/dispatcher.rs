//! The dispatcher: `serve` in production, `dev` on a laptop, `jobs` to
//! talk to a running one.
fn main() -> anyhow::Result<std::process::ExitCode> {
    dispatcher::cli::main()
}
