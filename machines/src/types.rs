//! Wire types of the Machines API.
//!
//! Field names, optionality and value formats follow Fly's OpenAPI
//! description (`shared/spec/openapi.yaml` plus the newer fields listed in
//! `shared/fly-machines-api.md`). Unknown fields of a machine config are kept
//! in `extra` so that a config echoed back by the server loses nothing.
//!
//! Decoding is lenient where Fly's own examples and Go's `omitempty` (the
//! tag fly-go carries) differ from the strict shape: a missing field reads
//! as zero or empty (`exit_code` omitted when it is 0), `null` reads as
//! empty (`"env": null`, `"metadata": null`, `"events": null`), an empty
//! restart policy reads as Fly's default. Only what a decision cannot do
//! without stays required: a machine's `id` and `state`; a body without
//! them fails loudly (`MachinesError::Decode`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `POST /v1/apps/{app}/machines` (create) and `POST .../{id}` (update).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CreateMachineRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `true` leaves the machine in `created` instead of booting it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_launch: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_service_registration: bool,
    /// `true` keeps the app's secrets out of the machine's environment.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_secrets: bool,
    /// Acquire a lease on create; the answer then carries `nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// Only on update: the version the caller last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    pub config: MachineConfig,
}

/// The machine's configuration. `image` is the only required field.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MachineConfig {
    /// Required on create (the API refuses a config without it); read
    /// leniently so an echoed config never fails a whole machine.
    #[serde(default)]
    pub image: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Guest>,
    /// Destroy the machine once its main process exits for good.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_destroy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_config: Option<StopConfig>,
    /// Every other field (services, checks, processes, mounts, dns, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// CPU and memory of a machine (`guest` in the API). Fly fills in
/// missing parts (`{"memory_mb": 512}` is a shared CPU); so do we.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Guest {
    #[serde(default = "Guest::default_cpu_kind")]
    pub cpu_kind: String,
    #[serde(default = "Guest::default_cpus")]
    pub cpus: u32,
    #[serde(default = "Guest::default_memory_mb")]
    pub memory_mb: u32,
    /// Other guest fields (`kernel_args`, `gpu_kind`, ...), kept as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Guest {
    pub fn new(cpu_kind: impl Into<String>, cpus: u32, memory_mb: u32) -> Self {
        Self {
            cpu_kind: cpu_kind.into(),
            cpus,
            memory_mb,
            extra: Default::default(),
        }
    }

    fn default_cpu_kind() -> String {
        "shared".into()
    }

    fn default_cpus() -> u32 {
        1
    }

    fn default_memory_mb() -> u32 {
        256
    }
}

/// `restart.policy`: what the platform does when the main process exits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Restart {
    #[serde(default)]
    pub policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart: the machine rests in `stopped` after its process exits.
    No,
    Always,
    /// Fly's default when no policy is given (`""` in Fly's examples).
    #[default]
    #[serde(alias = "")]
    OnFailure,
}

/// `init`: `exec` overrides both the image's ENTRYPOINT and CMD.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Init {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    /// Other init fields (`swap_size_mb`, `kernel_args`, ...), kept as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StopConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// A machine as create, get and list return it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub state: MachineState,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub private_ip: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<ImageRef>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub events: Vec<MachineEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// A machine as a `summary=true` list gives it: no config, events or
/// checks. What the sweeper needs of thousands of machines. The spec does
/// not promise `name` or `created_at` here; empty means "not given".
#[derive(Clone, Debug, Deserialize)]
pub struct MachineSummary {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub state: MachineState,
    #[serde(default)]
    pub created_at: String,
}

impl Machine {
    /// The newest exit event, if the main process has exited at least once.
    pub fn last_exit(&self) -> Option<&ExitEvent> {
        self.events
            .iter()
            .filter_map(MachineEvent::exit_event)
            .max_by_key(|e| e.0)
            .map(|(_, exit)| exit)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRef {
    #[serde(default)]
    pub registry: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

/// Machine states as Fly documents them. `Unknown` keeps the client working
/// when the platform adds a state.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Creating,
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Restarting,
    Suspending,
    Suspended,
    Updating,
    Replacing,
    Destroying,
    Destroyed,
    Failed,
    LaunchFailed,
    #[serde(other)]
    Unknown,
}

impl MachineState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Started => "started",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Restarting => "restarting",
            Self::Suspending => "suspending",
            Self::Suspended => "suspended",
            Self::Updating => "updating",
            Self::Replacing => "replacing",
            Self::Destroying => "destroying",
            Self::Destroyed => "destroyed",
            Self::Failed => "failed",
            Self::LaunchFailed => "launch_failed",
            Self::Unknown => "unknown",
        }
    }

    /// The main process is not running and will not run again by itself.
    pub fn is_down(self) -> bool {
        matches!(
            self,
            Self::Stopped
                | Self::Suspended
                | Self::Destroying
                | Self::Destroyed
                | Self::Failed
                | Self::LaunchFailed
        )
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a machine's event log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MachineEvent {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub source: String,
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<EventRequest>,
}

impl MachineEvent {
    /// `(timestamp, exit)` when this is an exit event. Fly's own client
    /// prefers `MonitorEvent.exit_event` when both are present; so do we.
    pub fn exit_event(&self) -> Option<(i64, &ExitEvent)> {
        let request = self.request.as_ref()?;
        let exit = request
            .monitor_event
            .as_ref()
            .and_then(|m| m.exit_event.as_ref())
            .or(request.exit_event.as_ref())?;
        Some((self.timestamp, exit))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EventRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_event: Option<ExitEvent>,
    #[serde(
        rename = "MonitorEvent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub monitor_event: Option<MonitorEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MonitorEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_event: Option<ExitEvent>,
}

/// How the main process ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitEvent {
    /// Omitted by Go's `omitempty` when it is 0.
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub guest_exit_code: i32,
    #[serde(default)]
    pub guest_signal: i32,
    /// The signal that ended the process, `-1` when none did.
    #[serde(default)]
    pub signal: i32,
    #[serde(default)]
    pub oom_killed: bool,
    /// The exit came from a stop request, not from the process itself.
    #[serde(default)]
    pub requested_stop: bool,
    #[serde(default)]
    pub restarting: bool,
    #[serde(default)]
    pub guest_error: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub exited_at: String,
}

/// `GET .../wait` success body.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WaitResponse {
    #[serde(default)]
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// `POST .../stop` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StopRequest {
    #[serde(
        default,
        deserialize_with = "signal_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// `POST .../signal` body. The signal is a name (`"SIGKILL"`) or, as
/// `fly machine kill` sends it, a number (`9`); read as text either way.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignalRequest {
    #[serde(deserialize_with = "required_signal_name")]
    pub signal: String,
}

/// `POST .../start` answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartResponse {
    #[serde(default)]
    pub previous_state: String,
    #[serde(default)]
    pub migrated: bool,
    #[serde(default)]
    pub new_host: String,
}

/// `{"ok": true}`, the answer of delete, stop and signal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OkResponse {
    pub ok: bool,
}

/// `POST .../lease` body (`ttl` may also come as a query parameter).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// Lease answers come wrapped: `{"status":"success","data":{...}}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseEnvelope {
    pub status: String,
    pub data: Lease,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub nonce: String,
    /// Unix seconds (not milliseconds, unlike event timestamps).
    pub expires_at: i64,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
}

/// The header that carries a lease nonce on mutating calls.
pub const LEASE_NONCE_HEADER: &str = "fly-machine-lease-nonce";

/// Error body of every failed call: `{"error": "...", "status": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorResponse {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A duration as Fly writes it: a Go duration string (`"10s"`, `"1m30s"`)
/// or, in older documents, integer nanoseconds. Always written as a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub fn parse(text: &str) -> Option<Duration> {
        let mut total = Duration::ZERO;
        let mut rest = text.trim();
        if rest.is_empty() {
            return None;
        }
        if rest == "0" {
            return Some(Duration::ZERO);
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let value: f64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per_unit = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return None,
            };
            rest = &rest[unit_len..];
            total += Duration::from_nanos((value * nanos_per_unit) as u64);
        }
        Some(total)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let text = if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{}ms", d.as_millis())
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Nanos(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Nanos(n) => Ok(GoDuration(Duration::from_nanos(n))),
            Raw::Text(t) => GoDuration::parse(&t)
                .map(GoDuration)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {t:?}"))),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A JSON value where `null` (what Go writes for a nil slice, map or
/// pointer) reads as the empty value.
#[derive(Debug, Default)]
pub(crate) struct NullAsEmpty<T>(pub T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for NullAsEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Option::<T>::deserialize(d)?.unwrap_or_default()))
    }
}

fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    NullAsEmpty::deserialize(d).map(|n| n.0)
}

/// A signal as a name or a number, as text (`"SIGTERM"`, `"9"`).
fn signal_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Name(String),
        Number(i64),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::Name(name) => name,
        Raw::Number(n) => n.to_string(),
    }))
}

fn required_signal_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    signal_name(d)?.ok_or_else(|| serde::de::Error::custom("signal must not be null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_in_both_forms() {
        let parse = |v: Value| serde_json::from_value::<GoDuration>(v).map(|d| d.0).ok();
        assert_eq!(parse("10s".into()), Some(Duration::from_secs(10)));
        assert_eq!(parse("1m30s".into()), Some(Duration::from_secs(90)));
        assert_eq!(parse("250ms".into()), Some(Duration::from_millis(250)));
        assert_eq!(parse(5_000_000_000u64.into()), Some(Duration::from_secs(5)));
        assert_eq!(parse("ten".into()), None);
        assert_eq!(parse("10x".into()), None);
    }

    #[test]
    fn exit_event_prefers_monitor_event() {
        let event: MachineEvent = serde_json::from_value(serde_json::json!({
            "id": "01J", "type": "exit", "status": "stopped", "source": "flyd",
            "timestamp": 1_700_000_000_123i64,
            "request": {
                "exit_event": {"exit_code": 1},
                "MonitorEvent": {"exit_event": {"exit_code": 137, "oom_killed": true}}
            }
        }))
        .unwrap();
        let (_, exit) = event.exit_event().unwrap();
        assert_eq!(exit.exit_code, 137);
        assert!(exit.oom_killed);
    }

    #[test]
    fn unknown_states_and_config_fields_survive() {
        let m: Machine = serde_json::from_value(serde_json::json!({
            "id": "1857156b526dd8", "state": "teleporting",
            "config": {"image": "x", "dns": {"skip_registration": true}}
        }))
        .unwrap();
        assert_eq!(m.state, MachineState::Unknown);
        assert!(m.config.extra.contains_key("dns"));
    }

    #[test]
    fn go_omitempty_and_null_read_as_empty() {
        let m: Machine = serde_json::from_value(serde_json::json!({
            "id": "1857156b526dd8", "state": "stopped",
            "config": {"image": "x", "env": null, "metadata": null, "restart": {"policy": ""}},
            "image_ref": {"registry": "r", "labels": null},
            "events": [{"type": "exit", "timestamp": 1,
                        "request": {"exit_event": {"oom_killed": false}}}]
        }))
        .unwrap();
        assert!(m.config.env.is_empty() && m.config.metadata.is_empty());
        assert_eq!(
            m.config.restart.as_ref().unwrap().policy,
            RestartPolicy::OnFailure
        );
        assert_eq!(
            m.last_exit().unwrap().exit_code,
            0,
            "omitted exit_code is 0"
        );
        let m: Machine = serde_json::from_value(serde_json::json!({
            "id": "1857156b526dd8", "state": "started", "config": null, "events": null
        }))
        .unwrap();
        assert!(m.events.is_empty());
    }

    #[test]
    fn a_machine_without_id_or_state_is_refused() {
        let state_missing = serde_json::json!({"id": "1857156b526dd8"});
        assert!(serde_json::from_value::<Machine>(state_missing).is_err());
        assert!(
            serde_json::from_value::<Machine>(serde_json::json!({"state": "started"})).is_err()
        );
    }

    #[test]
    fn signals_read_as_names_or_numbers() {
        let kill: SignalRequest = serde_json::from_str(r#"{"signal": 9}"#).unwrap();
        assert_eq!(kill.signal, "9");
        let stop: StopRequest = serde_json::from_str(r#"{"signal": "SIGTERM"}"#).unwrap();
        assert_eq!(stop.signal.as_deref(), Some("SIGTERM"));
    }

    #[test]
    fn summaries_parse_without_config_and_events() {
        let m: MachineSummary = serde_json::from_value(serde_json::json!({
            "id": "1857156b526dd8", "name": "job-x-1", "state": "started",
            "region": "ord", "created_at": "2023-11-08T01:52:30Z"
        }))
        .unwrap();
        assert_eq!(m.name, "job-x-1");
        assert_eq!(m.state, MachineState::Started);
        assert_eq!(m.created_at, "2023-11-08T01:52:30Z");
    }
}
