//! A local, faithful mock of the [Fly.io Machines API].
//!
//! The mock serves the real paths (`/v1/apps/{app}/machines/...`) with the
//! real status codes and bodies (the wire types come from the `machines`
//! crate, so client and mock cannot disagree), and "boots" each machine by
//! spawning its command as a local process, or, in virtual mode, by
//! running an in-process task.
//!
//! # Design
//!
//! - `server`: [`MockServer`], the shared state (machines by app behind
//!   one mutex, never held across an `.await`) and the accept loop.
//! - `routes`: the HTTP handlers, one module per concern (machines,
//!   lifecycle, wait, lease, mock controls); `auth` checks tokens.
//! - `state`: one machine's record; every state change goes through
//!   `MachineEntry::set_state`, which feeds `wait` and the counters.
//! - `supervisor`: the task behind each boot: latency, launch, exit,
//!   restart policy, `auto_destroy`.
//! - `guest`: a main process, real (`process`) or virtual
//!   ([`Boot::Virtual`]), behind one signal/await interface; `watchdog`
//!   enforces `guest.memory_mb` by RSS; `launch` picks the command and
//!   environment; `scratch` gives each machine a private root (`$HOME`,
//!   `$TMPDIR`) wiped on every boot, as a start resets a Fly rootfs.
//! - Realism: `ratelimit` (Fly's per-action token buckets), the latency
//!   model in [`config`], and [`faults`] (settable at run time through
//!   `POST /_mock/faults`).
//! - [`cli`]: the `mock-machines` binary's entry point.
//!
//! # Usage
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mock_machines::{MockConfig, MockServer};
//!
//! let config = MockConfig {
//!     token: "secret".into(),
//!     rate_limits: false, // on by default, as on Fly
//!     ..MockConfig::default()
//! };
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = MockServer::start(config, listener).await?;
//! // Point a client at server.base_url() (no `/v1`) with token "secret".
//! println!("{} live machines", server.stats().live);
//! server.shutdown().await; // kills and reaps every machine's processes
//! # Ok(())
//! # }
//! ```
//!
//! # Where the published facts are uncertain
//!
//! The mock picks one behaviour, documents it where it is implemented, and
//! lists it here with its source (keys as in `shared/fly-machines-api.md`):
//!
//! - **Status codes**: 412 for deleting a running machine without
//!   `force`/`kill` and for starting a machine that is not stopped; 409 for
//!   calls blocked by someone else's lease and for a taken machine name
//!   (DISTILLED `machinesCreate.patch`); 412 with `status:
//!   insufficient_capacity` for capacity errors (DOCS MR, FLYGO
//!   `flaps_error.go`); 404 for a `wait` on a destroyed machine that can no
//!   longer reach the wanted state; `settled` = started, stopped,
//!   suspended, failed or destroyed.
//! - **Rate limits** (`ratelimit`): Get Machine 5/s burst 10, every other
//!   action 1/s burst 3, per machine or, for create and list, per app (DOCS
//!   WWMA, superfly/docs #1630, #1966). Whether `wait` is limited is
//!   unverified: it is, as an action of its own. Reads other than Get
//!   Machine get the "every action" limit, the stricter reading.
//! - **404 texts**: `machine not found` and `lease not found`, no code
//!   prefix: flyctl matches on these words. Unknown routes answer a JSON
//!   404 (`{"error": "not found: ..."}`) and a wrong method a JSON 405, so
//!   no answer has an empty error body.
//! - **Signals**: by name (`"SIGKILL"`, `"KILL"`) or number, as a string or
//!   an integer (`{"signal": 9}` is what fly-go's `Kill` sends, though
//!   the spec's `SignalRequest` lists names only).
//! - **`wait`** accepts `instance_id` or `version` (FLYGO sends `version`,
//!   the docs `instance_id`) and never requires it, as flyctl's `machine
//!   stop` waits without one; a wrong one is a 412.
//! - **App secrets** ([`MockConfig::app_secrets`]): injected into machines
//!   created without `skip_secrets` ("Machines inherit secrets from the
//!   app", DOCS `apps-resource`); `config.env` wins over a secret of the
//!   same name (order undocumented). What Fly does with `skip_secrets` is
//!   undocumented; [`MockConfig::honour_skip_secrets`] can ignore it.
//! - **`GET .../ps`** answers the spec's `ProcessStat` list; `rss` is in
//!   bytes, `cpu`/`rtime`/`stime` are 0 (not sampled).
//!
//! [Fly.io Machines API]: https://fly.io/docs/machines/api/

pub mod cli;
pub mod config;
pub mod faults;
pub mod stats;

mod auth;
mod error;
mod guest;
mod ids;
mod launch;
mod process;
mod ratelimit;
mod routes;
mod scratch;
mod server;
mod signals;
mod state;
mod supervisor;
mod watchdog;

pub use config::{
    image_env_from_host, Boot, DelayRange, LatencyModel, MockConfig, VirtualFn, VirtualMachineEnv,
    IMAGE_ENV_FROM_HOST,
};
pub use faults::FaultSettings;
pub use server::MockServer;
pub use stats::Stats;
