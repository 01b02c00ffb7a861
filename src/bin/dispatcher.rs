//! The dispatcher: `serve` in production, `dev` on a laptop.

/// Many small, short-lived allocations on every request and event, across
/// threads: mimalloc serves those with much less contention than glibc's
/// malloc (see bench/README.md for the numbers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    dispatcher::cli::main()
}
