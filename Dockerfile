# One image serves two roles on Fly.io:
#   * the dispatcher app's own machines run CMD: `dispatcher serve`;
#   * every job machine the dispatcher creates boots this same image (its own
#     FLY_IMAGE_REF) with `init.exec = ["/usr/local/bin/runner"]`, which
#     replaces CMD. That path must equal the dispatcher's RUNNER_EXEC default
#     (tests/deploy_files.rs checks it).
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe from the
# manifests and Cargo.lock) -> builder (dependencies first, then the sources)
# -> runtime (Debian slim, two binaries, non-root).
#
# The builder's Rust matches the toolchain the project is developed and tested
# with (the workspace's rust-version, 1.85, is only the floor; Cargo.lock is
# resolved with the newer toolchain, so building with 1.85 could meet a
# dependency that needs more). Its bookworm base matches the runtime's glibc.

FROM rust:1.95-bookworm AS chef
WORKDIR /app
# Pinned so the dependency layer below is reproducible.
RUN cargo install cargo-chef --locked --version 0.1.78

# The recipe holds only what decides the dependency build: every workspace
# manifest and Cargo.lock. It is identical (so the next stage's cache holds)
# until one of those changes; editing .rs files does not change it.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Builds every dependency of the workspace against stub sources: the slow,
# rarely-changing layer. Same profile, flags and targets as the real build
# below, so its artifacts are reused there instead of compiled again.
RUN cargo chef cook --release --locked --bins --recipe-path recipe.json
COPY . .
# Builds dispatcher, runner and mock-machines from the real sources;
# --locked refuses to build if Cargo.lock is out of date with the manifests.
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim AS runtime
# ca-certificates: the system trust store, the only package added. The HTTP
# client is built with bundled webpki roots today, so the dispatcher does not
# read it yet; it keeps TLS working for anything that uses the system store
# (native-roots TLS, a job handler calling an HTTPS service).
# DL3008 (pin apt versions) is ignored on purpose: Debian replaces a package
# version in the archive when it updates it (a ca-certificates update is
# usually a trust-store fix), so a pinned version would stop the image from
# building instead of making it reproducible; the bookworm tag is the pin.
# The service account has no home and no login shell: neither the dispatcher
# nor the runner needs either.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --uid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app

# mock-machines is built (the build above uses --bins) but deliberately not
# shipped: it is a standalone stand-in for the Fly Machines API for local use
# and tests (`dispatcher dev` embeds the same mock in-process), and nothing in
# production runs it. Leaving it out keeps the image smaller.
COPY --from=builder /app/target/release/dispatcher /usr/local/bin/dispatcher
COPY --from=builder /app/target/release/runner /usr/local/bin/runner

# Numeric, so a runtime (or a policy such as runAsNonRoot) can tell it is not
# root without resolving names; 10001 is the `app` account created above.
USER 10001:10001
# The dispatcher's API (PORT, default 8080; fly.toml's internal_port).
EXPOSE 8080
# Exec form: no shell sits between Fly's init and the dispatcher, so the
# SIGTERM that fly.toml's kill_signal sends reaches the dispatcher itself,
# which then drains in-flight attempts before exiting.
CMD ["dispatcher", "serve"]
