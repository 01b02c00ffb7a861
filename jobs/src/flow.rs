//! Flow control: concurrency keys with limits, fair queueing across keys,
//! rate limits, singletons, debounce, and pausing a kind or a key. The
//! user's view is `docs/flow-control.md`; the decisions are in
//! `scripts/flow.lua`, shared by the claim, enqueue, release and cancel
//! scripts.
//!
//! ## Key layout (besides the store's, see [`crate::store`])
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `fq:q:{key}` | zset | queued jobs of a concurrency key (`fq:q:` for jobs without one), scored like `queue` |
//! | `fq:ring` | zset | keys with work that may be served, scored by the turn they joined or were last served |
//! | `fq:turn` | counter | the last turn handed out |
//! | `fq:wait` | zset | keys out of rate tokens, scored by when one is due |
//! | `fq:in_flight_key`, `fq:in_flight_keys` | hash | key of each in-flight attempt; slots held per key |
//! | `fq:limits`, `fq:default_limit` | hash, string | per-key concurrency overrides; the default |
//! | `fq:rates`, `fq:bucket:{scope}` | hash | rate limits by scope (`kind:{kind}`, `key:{key}`); their token buckets |
//! | `fq:paused:kinds`, `fq:paused:keys` | set | what is paused |
//! | `fq:single:{key}` | hash | a singleton key's `waiting` and last `running` job |
//! | `fq:adopted`, `fq:adopt_from` | string | jobs queued before flow control are filed under their keys (done; where the filing is) |

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::model::{InvalidValue, Kind};
use crate::store::{Result, Store};

/// Longest concurrency or singleton key.
pub const MAX_KEY_LEN: usize = 128;

/// A concurrency or singleton key (a tenant id, a record id):
/// `[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}`, so it fits a URL path segment
/// and a store key as is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]
pub struct FlowKey(String);

impl FlowKey {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.:@-".contains(c));
        if first_ok && rest_ok && s.len() <= MAX_KEY_LEN {
            Ok(Self(s.to_string()))
        } else {
            Err(InvalidValue(format!(
                "{s:?} is not a valid key: use 1 to {MAX_KEY_LEN} characters of A-Z, a-z, 0-9, '_', '.', ':', '@', '-', starting with a letter or digit"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FlowKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FlowKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a submit under a singleton key does to the job already waiting
/// under it (queued or scheduled, not yet on a machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SingletonPolicy {
    /// The waiting job stays; the submit answers it (200) and stores
    /// nothing.
    Keep,
    /// The waiting job is cancelled; the new one is queued.
    Replace,
    /// As `replace`, and the key's running job is cancelled as well.
    CancelRunning,
}

/// Flow-control options of one submit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<FlowKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub singleton_key: Option<FlowKey>,
    /// Unset with a debounce (which has its own behaviour).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub singleton_policy: Option<SingletonPolicy>,
    /// A trailing debounce under `singleton_key`: the job runs this long
    /// after the last submit of a burst, with that submit's params.
    #[serde(
        rename = "debounce_ms",
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_millis"
    )]
    pub debounce: Option<Duration>,
}

fn as_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.map_or(0, |d| d.as_millis() as u64))
}

/// What a rate limit or a pause applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Kind(Kind),
    Key(FlowKey),
}

impl Scope {
    /// From a route's `{scope}/{name}`: `kind/{kind}` or `key/{key}`.
    pub fn parse(scope: &str, name: &str) -> Result<Self, InvalidValue> {
        match scope {
            "kind" => Ok(Self::Kind(Kind::parse(name)?)),
            "key" => Ok(Self::Key(FlowKey::parse(name)?)),
            other => Err(InvalidValue(format!(
                "{other:?} is not a scope: use \"kind\" or \"key\""
            ))),
        }
    }

    /// As rate limits are stored: `kind:{kind}` or `key:{key}`.
    fn rate_scope(&self) -> String {
        match self {
            Self::Kind(kind) => format!("kind:{kind}"),
            Self::Key(key) => format!("key:{key}"),
        }
    }

    /// The paused set it belongs to, and the member.
    fn paused_set(&self) -> (&'static str, &str) {
        match self {
            Self::Kind(kind) => ("kinds", kind.as_str()),
            Self::Key(key) => ("keys", key.as_str()),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kind(kind) => write!(f, "kind {kind}"),
            Self::Key(key) => write!(f, "key {key}"),
        }
    }
}

/// `per` starts each `interval_ms`, with at most `burst` back to back. A
/// window of one interval sees at most `per + burst - 1` starts, so with
/// `burst` 1 never more than `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateLimit {
    pub per: u32,
    pub interval_ms: u64,
    pub burst: u32,
}

/// Why a queued job is not taken yet, beyond waiting for a free slot and
/// its turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaitingFor {
    /// `paused_kind`, `paused_key`, `concurrency_limit` (its key holds
    /// all the slots it may), `rate_limit`.
    pub reason: String,
    /// What holds it: `kind:{kind}` or `key:{key}`.
    pub scope: String,
    /// For a rate limit: when the next token is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// A key holding machines, as [`FlowOverview::top_keys`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyLoad {
    /// `""` is the jobs without a key.
    pub key: String,
    pub in_flight: u64,
    pub queued: u64,
    /// 0: none.
    pub limit: u32,
}

/// Every flow-control setting, and the keys holding the most machines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FlowOverview {
    /// The concurrency limit of a key without an override; 0: none.
    pub default_limit: u32,
    pub limits: BTreeMap<String, u32>,
    /// By scope: `kind:{kind}` or `key:{key}`.
    pub rates: BTreeMap<String, RateLimit>,
    #[serde(deserialize_with = "lua_list")]
    pub paused_kinds: Vec<String>,
    #[serde(deserialize_with = "lua_list")]
    pub paused_keys: Vec<String>,
    /// Keys with queued work awaiting their turn.
    pub ring_keys: u64,
    pub keys_holding_machines: u64,
    #[serde(deserialize_with = "lua_list")]
    pub top_keys: Vec<KeyLoad>,
}

/// Lua's JSON encoder writes an empty table as `{}`, list or not.
fn lua_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        List(Vec<T>),
        Empty {},
    }
    Ok(match Either::deserialize(d)? {
        Either::List(items) => items,
        Either::Empty {} => Vec::new(),
    })
}

fn script(body: &str) -> Script {
    Script::from_lua(format!(
        "{}\n{}\n{}",
        include_str!("scripts/prelude.lua"),
        include_str!("scripts/flow.lua"),
        body
    ))
}

static ADMIN: LazyLock<Script> = LazyLock::new(|| script(include_str!("scripts/flow_admin.lua")));
static READ: LazyLock<Script> = LazyLock::new(|| script(include_str!("scripts/flow_read.lua")));

/// `flow_admin.lua`'s arguments. An absent value is left out, not
/// `null`: Lua reads JSON null as a true value.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum AdminOp<'a> {
    Limit {
        key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    DefaultLimit {
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    Rate {
        scope: String,
        #[serde(flatten)]
        limit: Option<RateLimit>,
    },
    Pause {
        scope: &'static str,
        name: &'a str,
    },
    Resume {
        scope: &'static str,
        name: &'a str,
    },
}

/// `flow_read.lua`'s arguments.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ReadOp<'a> {
    Overview { top: usize },
    Waiting { kind: &'a str, key: &'a str },
}

impl Store {
    async fn flow_admin(&self, op: AdminOp<'_>) -> Result<()> {
        let _: String = self.run(&ADMIN, vec![serde_json::to_string(&op)?]).await?;
        Ok(())
    }

    /// Sets (`Some`) or removes the concurrency limit of `key`.
    pub async fn set_key_limit(&self, key: &FlowKey, limit: Option<u32>) -> Result<()> {
        self.flow_admin(AdminOp::Limit {
            key: key.as_str(),
            limit,
        })
        .await
    }

    /// Sets (`Some`) or removes the limit of keys without an override.
    pub async fn set_default_key_limit(&self, limit: Option<u32>) -> Result<()> {
        self.flow_admin(AdminOp::DefaultLimit { limit }).await
    }

    /// Sets (`Some`) or removes the rate limit of `scope`; either way its
    /// bucket starts full.
    pub async fn set_rate_limit(&self, scope: &Scope, limit: Option<RateLimit>) -> Result<()> {
        self.flow_admin(AdminOp::Rate {
            scope: scope.rate_scope(),
            limit,
        })
        .await
    }

    /// Pauses (`true`) or resumes a kind or a key: its queued jobs stay
    /// queued, and are not claimed until it is resumed.
    pub async fn set_paused(&self, scope: &Scope, paused: bool) -> Result<()> {
        let (scope, name) = scope.paused_set();
        self.flow_admin(match paused {
            true => AdminOp::Pause { scope, name },
            false => AdminOp::Resume { scope, name },
        })
        .await
    }

    /// The settings and the `top` keys holding the most machines.
    pub async fn flow_overview(&self, top: usize) -> Result<FlowOverview> {
        let text: String = self
            .run(
                &READ,
                vec![serde_json::to_string(&ReadOp::Overview { top })?],
            )
            .await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Why a queued job of `kind` under `key` is held back, if it is
    /// (kind caps are each dispatcher's setting and not looked at).
    pub async fn waiting_for(
        &self,
        kind: &Kind,
        key: Option<&FlowKey>,
    ) -> Result<Option<WaitingFor>> {
        let op = ReadOp::Waiting {
            kind: kind.as_str(),
            key: key.map_or("", FlowKey::as_str),
        };
        let text: String = self.run(&READ, vec![serde_json::to_string(&op)?]).await?;
        Ok(serde_json::from_str(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_pattern() {
        for ok in ["tenant-1", "A", "org:42@eu", "x.y_z", &"k".repeat(128)] {
            assert!(FlowKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "has space", "a/b", "ünï", &"k".repeat(129)] {
            assert!(FlowKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_parse_from_routes() {
        assert!(matches!(Scope::parse("kind", "echo"), Ok(Scope::Kind(_))));
        assert!(matches!(Scope::parse("key", "t-1"), Ok(Scope::Key(_))));
        assert!(Scope::parse("tenant", "x").is_err());
        assert!(Scope::parse("kind", "Bad Kind").is_err());
    }

    #[test]
    fn lua_empty_tables_read_as_empty_lists() {
        let text = r#"{"default_limit":0,"limits":{},"rates":{},"paused_kinds":{},
            "paused_keys":["a"],"ring_keys":0,"keys_holding_machines":0,"top_keys":{}}"#;
        let overview: FlowOverview = serde_json::from_str(text).unwrap();
        assert_eq!(overview.paused_keys, vec!["a".to_string()]);
        assert!(overview.paused_kinds.is_empty() && overview.top_keys.is_empty());
    }
}
