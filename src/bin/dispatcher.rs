//! The dispatcher: `serve` in production, `dev` on a laptop.
fn main() -> anyhow::Result<()> {
    dispatcher::cli::main()
}
