//! The `mock-machines` command line: flags, logging, runtime, signals.
//!
//! The CLI's defaults are closer to the real platform than
//! `MockConfig::default()` (which is tuned for tests): rate limits on,
//! creates taking 1–3 s before the machine starts booting, boots 100–400 ms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::{DelayRange, LatencyModel, MockConfig};
use crate::faults::FaultSettings;
use crate::server::MockServer;

/// A local mock of the Fly.io Machines API that boots each machine as a
/// local process (in its own process group) on this host.
///
/// Point a client at the printed base URL (e.g. FLY_FLAPS_BASE_URL for
/// flyctl/fly-go); paths are the real ones (/v1/apps/{app}/machines/...).
/// Besides the API it serves GET /_mock/stats and GET/POST /_mock/faults
/// (same token). Logs go to stderr; RUST_LOG sets the level (default info).
#[derive(Debug, Parser)]
#[command(name = "mock-machines", version)]
pub struct Args {
    /// Address to listen on. Use port 0 for any free port; the base URL is
    /// printed on stdout once listening.
    #[arg(long, env = "MOCK_MACHINES_LISTEN", default_value = "127.0.0.1:4280")]
    pub listen: SocketAddr,

    /// The API token clients must send, as `Authorization: Bearer X`,
    /// `FlyV1 X` or `Bearer FlyV1 X`.
    #[arg(long, env = "FLY_API_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Region of machines created without one.
    #[arg(long, env = "MOCK_MACHINES_REGION", default_value = "lcl")]
    pub region: String,

    /// Map an image ref to the local command that stands in for it, as
    /// REF=COMMAND (COMMAND split on whitespace). Repeatable. Used for
    /// machines whose config has no init.exec/entrypoint/cmd.
    #[arg(long = "image", value_name = "REF=COMMAND", value_parser = parse_image)]
    pub images: Vec<(String, Vec<String>)>,

    /// Command (split on whitespace) for images not given with --image.
    #[arg(long, env = "MOCK_MACHINES_DEFAULT_COMMAND", value_name = "COMMAND")]
    pub default_command: Option<String>,

    /// Turn off Fly's per-action rate limits (1 req/s, burst 3 per machine
    /// or, for create and list, per app; Get Machine 5 req/s, burst 10;
    /// wait counts as an action of its own).
    #[arg(long, env = "MOCK_MACHINES_NO_RATE_LIMITS")]
    pub no_rate_limits: bool,

    /// Multiply every rate limit (rate and burst) by this factor.
    #[arg(long, env = "MOCK_MACHINES_RATE_LIMIT_SCALE", default_value_t = 1.0)]
    pub rate_limit_scale: f64,

    /// Time a new machine stays `created` before it starts booting, in ms:
    /// a fixed value (`0`) or a uniform range (`1000-3000`).
    #[arg(long, env = "MOCK_MACHINES_CREATE_LATENCY_MS", default_value = "1000-3000", value_parser = parse_delay)]
    pub create_latency_ms: DelayRange,

    /// Time a machine stays `starting` before its process is launched, in
    /// ms: a fixed value or a range.
    #[arg(long, env = "MOCK_MACHINES_START_LATENCY_MS", default_value = "100-400", value_parser = parse_delay)]
    pub start_latency_ms: DelayRange,

    /// Do not kill machines whose processes exceed guest.memory_mb of RSS.
    #[arg(long, env = "MOCK_MACHINES_NO_MEMORY_LIMIT")]
    pub no_memory_limit: bool,

    /// How often the memory watchdog samples RSS, in ms.
    #[arg(long, env = "MOCK_MACHINES_WATCHDOG_INTERVAL_MS", default_value_t = 50)]
    pub watchdog_interval_ms: u64,

    /// Initial fault settings as JSON, e.g. '{"crash_rate":0.1}'; the same
    /// fields POST /_mock/faults accepts (create_error_rate,
    /// create_error_status, capacity_error_rate, never_boot_rate,
    /// crash_rate, oom_rate, drop_connection_rate, drop_answer_rate,
    /// drop_next_create_answers, lean_summaries, go_omitempty,
    /// stateless_gets,
    /// slow_response_ms,
    /// fail_next_creates, fail_status).
    #[arg(long, env = "MOCK_MACHINES_FAULTS", value_name = "JSON")]
    pub faults: Option<String>,

    /// An app secret (`fly secrets set`), as NAME=VALUE. Repeatable.
    /// Machines created without `skip_secrets` get it in their
    /// environment, as on Fly.
    #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = parse_secret)]
    pub secrets: Vec<(String, String)>,

    /// Inject --secret values even into machines created with
    /// `skip_secrets: true` (Fly does not document what the flag does;
    /// this tests that job code stays clean if it does nothing).
    #[arg(long, env = "MOCK_MACHINES_IGNORE_SKIP_SECRETS")]
    pub ignore_skip_secrets: bool,

    /// Do not make the mock a child subreaper (orphans of machine
    /// processes are then reaped by PID 1 instead of the mock).
    #[arg(long, env = "MOCK_MACHINES_NO_REAP_ORPHANS")]
    pub no_reap_orphans: bool,

    /// Log format on stderr.
    #[arg(long, env = "MOCK_MACHINES_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// The server configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<MockConfig> {
        let faults = match &self.faults {
            Some(json) => FaultSettings::default()
                .merged(serde_json::from_str(json).context("--faults is not JSON")?)?,
            None => FaultSettings::default(),
        };
        Ok(MockConfig {
            token: self.token.clone(),
            images: self.images.iter().cloned().collect::<BTreeMap<_, _>>(),
            app_secrets: self.secrets.iter().cloned().collect(),
            honour_skip_secrets: !self.ignore_skip_secrets,
            default_command: self.default_command.as_deref().map(split_command),
            region: self.region.clone(),
            rate_limits: !self.no_rate_limits,
            rate_limit_scale: self.rate_limit_scale,
            latency: LatencyModel {
                create: self.create_latency_ms,
                start: self.start_latency_ms,
            },
            faults,
            enforce_memory: !self.no_memory_limit,
            watchdog_interval: Duration::from_millis(self.watchdog_interval_ms),
            boot: crate::config::Boot::Process,
            reap_orphans: !self.no_reap_orphans,
            image_env: crate::config::image_env_from_host(),
        })
    }
}

fn parse_secret(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

fn split_command(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn parse_image(text: &str) -> Result<(String, Vec<String>), String> {
    let (image, command) = text
        .split_once('=')
        .ok_or_else(|| format!("expected REF=COMMAND, got {text:?}"))?;
    let command = split_command(command);
    if image.is_empty() || command.is_empty() {
        return Err(format!("expected REF=COMMAND, got {text:?}"));
    }
    Ok((image.to_string(), command))
}

fn parse_delay(text: &str) -> Result<DelayRange, String> {
    let ms = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("expected MS or MIN-MAX in milliseconds, got {text:?}"))
    };
    match text.split_once('-') {
        Some((min, max)) => {
            let (min, max) = (ms(min)?, ms(max)?);
            if min > max {
                return Err(format!("range {text:?} has min > max"));
            }
            Ok(DelayRange { min, max })
        }
        None => ms(text).map(DelayRange::fixed),
    }
}

/// Entry point of the `mock-machines` binary.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args.listen, config))
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(listen: SocketAddr, config: MockConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let server = MockServer::start(config, listener).await?;
    println!("{}", server.base_url());
    shutdown_signal().await?;
    tracing::info!("shutting down; killing machine processes");
    server.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_flags_into_a_config() {
        let args = Args::try_parse_from([
            "mock-machines",
            "--token",
            "t",
            "--image",
            "registry.fly.io/app:latest=/bin/worker --once",
            "--create-latency-ms",
            "0",
            "--start-latency-ms",
            "5-10",
            "--faults",
            r#"{"crash_rate":0.5}"#,
            "--no-rate-limits",
        ])
        .unwrap();
        let config = args.config().unwrap();
        assert_eq!(
            config.images["registry.fly.io/app:latest"],
            ["/bin/worker", "--once"]
        );
        assert_eq!(config.latency.create, DelayRange::fixed(Duration::ZERO));
        assert_eq!(config.latency.start.max, Duration::from_millis(10));
        assert_eq!(config.faults.crash_rate, 0.5);
        assert!(!config.rate_limits);
        assert!(parse_delay("10-5").is_err());
        assert!(parse_image("no-equals").is_err());
    }
}
