//! `dispatcher dev`: the whole system on one laptop.
//!
//! 1. A Valkey-compatible server: used if one answers at `--valkey-url`,
//!    else started (`valkey-server` or `redis-server`, data in `.dev/`).
//! 2. The mock Machines API in-process on `--machines-port`; it boots each
//!    "machine" as a local `runner` process (the binary next to this one).
//! 3. The dispatcher on `--port`, on loopback, with a warm pool of
//!    [`DEV_WARM_POOL`] machines unless `--warm-pool` says otherwise.
//!
//! `FLY_API_TOKEN` (generated when unset) is both the token the mock
//! requires and the one the dispatcher sends.

use anyhow::{bail, Context as _};

use devkit::mock::Limits;
use devkit::system::{Setup, System};
use devkit::valkey::{answers_ping, LocalValkey};
use dispatcher::cli::DevArgs;

/// The warm pool `dev` keeps unless `--warm-pool` says otherwise.
pub const DEV_WARM_POOL: u32 = 8;

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let store_url = args.common.valkey_url.clone();
    let shown_store_url = jobs::redact_url(&store_url);
    let Some(store_port) = loopback_port(&store_url) else {
        bail!("dev runs its store on loopback; --valkey-url {shown_store_url} is not a loopback redis:// URL");
    };
    // Kept alive (and killed on exit) only when we started it.
    let local_store = if answers_ping(store_port).await {
        println!("store:      using the server already answering at {shown_store_url}");
        None
    } else {
        let server =
            LocalValkey::start(store_port, std::path::Path::new(".dev/valkey"), true).await?;
        println!("store:      started a local server at {shown_store_url} (data in .dev/valkey)");
        Some(server)
    };

    let token = std::env::var("FLY_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| format!("dev-{}", uuid::Uuid::new_v4().simple()));
    let app = std::env::var("FLY_APP_NAME").unwrap_or_else(|_| "local".into());
    let runner = std::env::current_exe()?
        .parent()
        .map(|dir| dir.join("runner"))
        .filter(|path| path.is_file())
        .context(
            "the `runner` binary is not next to `dispatcher`; build both with `cargo build --bins`",
        )?;
    let setup = Setup {
        app: app.clone(),
        token: token.clone(),
        // The mock keeps Fly's rate limits, so `dev` shows the pacing a
        // deployment meets.
        mock: devkit::mock::config(&token, Limits::Fly)?,
        image: std::env::var("FLY_IMAGE_REF").unwrap_or_else(|_| "local/runner:dev".into()),
        runner,
        runner_store_url: None,
        local_store,
    };
    let warm_pool_given = !args.common.warm_pool.is_empty();
    let system = System::start(&args, setup, |settings| {
        // On a laptop nothing routes around a stopping dispatcher, and the
        // Valkey server and machines this process started must go with
        // it: Ctrl-C stops at once instead of draining.
        settings.shutdown_grace = std::time::Duration::ZERO;
        // The embedded mock keeps Fly's rate limits (one create per second
        // per app), so without a pool a newcomer's burst of jobs would
        // crawl.
        if !warm_pool_given {
            settings.launch.pools = vec![dispatcher::cli::default_pool(
                &settings.api.defaults.machine,
                DEV_WARM_POOL,
            )];
        }
    })
    .await?;
    let auth_note = match system.settings.api.tokens.first() {
        None => {
            "open (no token; loopback only). Set DISPATCHER_API_TOKENS to require one.".to_string()
        }
        Some(token) => format!("Bearer token required: {token}"),
    };
    let addr = system.addr();
    let mock_url = system.mock.base_url();
    println!("machines:   mock Machines API at {mock_url} (app {app:?})");
    println!("            FLY_API_TOKEN={token}");
    println!(
        "            curl -H 'Authorization: Bearer {token}' {mock_url}/v1/apps/{app}/machines"
    );
    println!("dispatcher: http://{addr}  API {auth_note}");
    println!(
        "try:        curl -X POST {addr}/jobs -H 'content-type: application/json' -d '{{\"kind\":\"echo\",\"params\":{{\"hello\":\"world\"}}}}'"
    );

    system.shutdown.trigger_on_signals();
    system.run_until_stopped().await
}

/// The port of a `redis://` URL whose host is loopback.
fn loopback_port(url: &str) -> Option<u16> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("valkey://"))?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, port.parse().ok()?),
        _ => (host_port, 6379),
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]").then_some(port)
}

#[cfg(test)]
mod tests {
    use super::loopback_port;

    #[test]
    fn finds_loopback_ports() {
        assert_eq!(loopback_port("redis://127.0.0.1:6379"), Some(6379));
        assert_eq!(loopback_port("redis://localhost"), Some(6379));
        assert_eq!(loopback_port("redis://:pw@127.0.0.1:7000/0"), Some(7000));
        assert_eq!(loopback_port("redis://10.0.0.5:6379"), None);
        assert_eq!(loopback_port("rediss://127.0.0.1:6379"), None);
    }
}
