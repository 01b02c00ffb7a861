//! [`StoreAddress`]: where the job store is and how to reach it, parsed from
//! the URL a user pastes (`VALKEY_URL`, `RUNNER_VALKEY_URL`,
//! `JOBS_STORE_URL`). One form per deployment:
//!
//! | deployment | URL |
//! | --- | --- |
//! | one server | `redis://[user:password@]host[:port][/db]` |
//! | one server over TLS | `rediss://[user:password@]host[:port][/db]` |
//! | primary + replicas under Sentinel | `redis-sentinel://[user:password@]sentinel1[:26379][/db]?master=NAME&node=sentinel2:26379&node=sentinel3:26379` |
//! | cluster | `redis-cluster://[user:password@]node1:6379?node=node2:6379&node=node3:6379` |
//!
//! `valkey` may replace `redis` in every scheme; `rediss-sentinel://` and
//! `rediss-cluster://` add TLS. Hosts may be names (Fly's `.internal` and
//! `.flycast` resolve to IPv6) or IPv6 literals in brackets
//! (`[fdaa:0:1::3]:6379`). Sentinels with their own credentials take
//! `sentinel_user` / `sentinel_password`. User and password are
//! percent-decoded (`%40` for `@`).
//!
//! We parse the URL ourselves rather than hand it to fred: fred cannot read
//! IPv6 `node=` entries, and silently ignores parts it does not use, while
//! a mistyped parameter here is an error naming the part, with the password
//! redacted.

use std::fmt;
use std::str::FromStr;

use fred::types::config::{ClusterDiscoveryPolicy, Config, Server, ServerConfig};
use url::{Host, Url};

/// How the servers behind the address are arranged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    Standalone(Endpoint),
    /// Sentinels that name the current primary of the `master` set.
    Sentinel {
        master: String,
        sentinels: Vec<Endpoint>,
        /// Credentials of the sentinels, when they differ from none.
        user: Option<String>,
        password: Option<String>,
    },
    /// Any known nodes of a cluster; the rest are discovered.
    Cluster(Vec<Endpoint>),
}

/// One `host:port`. IPv6 literals are kept without brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// A parsed store URL. Its `Display` is the URL with passwords redacted,
/// safe for logs and error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreAddress {
    pub topology: Topology,
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: Option<u8>,
    redacted: String,
}

/// A store URL that cannot be used: which part is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store URL {url}: {part}: {problem}")]
pub struct AddressError {
    /// The URL, password redacted.
    pub url: String,
    pub part: &'static str,
    pub problem: String,
}

const SCHEMES: &str = "redis://, rediss://, redis-sentinel://, rediss-sentinel://, \
                       redis-cluster:// or rediss-cluster:// (valkey may replace redis)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Standalone,
    Sentinel,
    Cluster,
}

impl FromStr for StoreAddress {
    type Err = AddressError;

    fn from_str(raw: &str) -> Result<Self, AddressError> {
        let redacted = redact(raw);
        let fail = |part: &'static str, problem: String| AddressError {
            url: redacted.clone(),
            part,
            problem,
        };
        let url = Url::parse(raw.trim()).map_err(|e| fail("URL", e.to_string()))?;
        let scheme = url.scheme().replace("valkey", "redis");
        let (form, tls) = match scheme.as_str() {
            "redis" => (Form::Standalone, false),
            "rediss" => (Form::Standalone, true),
            "redis-sentinel" => (Form::Sentinel, false),
            "rediss-sentinel" => (Form::Sentinel, true),
            "redis-cluster" => (Form::Cluster, false),
            "rediss-cluster" => (Form::Cluster, true),
            other => {
                return Err(fail(
                    "scheme",
                    format!("{other}:// is not one of {SCHEMES}"),
                ))
            }
        };
        let default_port = if form == Form::Sentinel { 26379 } else { 6379 };
        let first = Endpoint {
            host: host(&url).ok_or_else(|| fail("host", "missing".into()))?,
            port: url.port().unwrap_or(default_port),
        };
        let user = decoded(url.username()).map_err(|p| fail("user", p))?;
        let password =
            decoded(url.password().unwrap_or_default()).map_err(|p| fail("password", p))?;
        let database = match url.path().trim_start_matches('/') {
            "" => None,
            _ if form == Form::Cluster => {
                return Err(fail(
                    "database",
                    "a cluster has only database 0; drop the path".into(),
                ))
            }
            db => Some(db.parse::<u8>().map_err(|_| {
                fail(
                    "database",
                    format!("{db:?} is not a database number (0-255)"),
                )
            })?),
        };

        let mut nodes = vec![first];
        let mut master = None;
        let mut sentinel_user = None;
        let mut sentinel_password = None;
        for (key, value) in url.query_pairs() {
            let only_for = |wanted: Form, what: &str| {
                if form == wanted {
                    Ok(())
                } else {
                    Err(fail("query", format!("`{key}` is only for {what} URLs")))
                }
            };
            match key.as_ref() {
                "node" => {
                    if form == Form::Standalone {
                        return Err(fail(
                            "query",
                            "`node` lists sentinels or cluster nodes; use redis-sentinel:// or redis-cluster://".into(),
                        ));
                    }
                    nodes.push(endpoint(&value, default_port).map_err(|p| fail("node", p))?);
                }
                "master" => {
                    only_for(Form::Sentinel, "redis-sentinel://")?;
                    master = Some(value.into_owned()).filter(|m| !m.is_empty());
                }
                "sentinel_user" => {
                    only_for(Form::Sentinel, "redis-sentinel://")?;
                    sentinel_user = Some(value.into_owned());
                }
                "sentinel_password" => {
                    only_for(Form::Sentinel, "redis-sentinel://")?;
                    sentinel_password = Some(value.into_owned());
                }
                other => {
                    return Err(fail(
                        "query",
                        format!("unknown parameter `{other}` (known: node, master, sentinel_user, sentinel_password)"),
                    ))
                }
            }
        }
        let topology = match form {
            Form::Standalone => Topology::Standalone(nodes.remove(0)),
            Form::Cluster => Topology::Cluster(nodes),
            Form::Sentinel => Topology::Sentinel {
                master: master.ok_or_else(|| {
                    fail(
                        "master",
                        "a Sentinel URL names its master set: ?master=NAME".into(),
                    )
                })?,
                sentinels: nodes,
                user: sentinel_user,
                password: sentinel_password,
            },
        };
        Ok(Self {
            topology,
            tls,
            user,
            password,
            database,
            redacted,
        })
    }
}

impl StoreAddress {
    /// The client configuration fred connects with (TLS is added by the
    /// caller, which owns the trusted roots).
    pub(crate) fn fred_config(&self) -> Config {
        let server = |e: &Endpoint| Server::new(e.host.as_str(), e.port);
        let server = match &self.topology {
            Topology::Standalone(e) => ServerConfig::Centralized { server: server(e) },
            Topology::Cluster(nodes) => ServerConfig::Clustered {
                hosts: nodes.iter().map(server).collect(),
                policy: ClusterDiscoveryPolicy::default(),
            },
            Topology::Sentinel {
                master,
                sentinels,
                user,
                password,
            } => ServerConfig::Sentinel {
                hosts: sentinels.iter().map(server).collect(),
                service_name: master.clone(),
                username: user.clone(),
                password: password.clone(),
            },
        };
        Config {
            server,
            username: self.user.clone(),
            password: self.password.clone(),
            database: self.database,
            ..Config::default()
        }
    }
}

impl fmt::Display for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Never prints the password, even in `{:?}`.
impl fmt::Debug for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreAddress({})", self.redacted)
    }
}

fn host(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Ipv6(ip) => Some(ip.to_string()),
        Host::Ipv4(ip) => Some(ip.to_string()),
        Host::Domain(name) if !name.is_empty() => Some(name.to_string()),
        Host::Domain(_) => None,
    }
}

/// `host:port`, `host` or `[ipv6]:port`.
fn endpoint(text: &str, default_port: u16) -> Result<Endpoint, String> {
    let url = Url::parse(&format!("redis://{text}"))
        .map_err(|e| format!("{text:?} is not host:port ({e})"))?;
    match host(&url) {
        Some(host) if url.path().is_empty() || url.path() == "/" => Ok(Endpoint {
            host,
            port: url.port().unwrap_or(default_port),
        }),
        _ => Err(format!("{text:?} is not host:port")),
    }
}

fn decoded(text: &str) -> Result<Option<String>, String> {
    let text = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| "not UTF-8 once percent-decoded".to_string())?;
    Ok((!text.is_empty()).then(|| text.into_owned()))
}

/// The URL with the password (and `sentinel_password`) replaced by `***`.
/// Works on text that does not parse, so error messages can show it too.
pub fn redact(raw: &str) -> String {
    let raw = raw.trim();
    let Some((scheme, rest)) = raw.split_once("://") else {
        return if raw.contains('@') {
            "***".into()
        } else {
            raw.into()
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.find("sentinel_password=") {
        Some(at) => {
            let value_start = at + "sentinel_password=".len();
            let value_end = tail[value_start..]
                .find('&')
                .map_or(tail.len(), |end| value_start + end);
            format!("{}***{}", &tail[..value_start], &tail[value_end..])
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> StoreAddress {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn error(text: &str) -> AddressError {
        text.parse::<StoreAddress>().unwrap_err()
    }

    fn at(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn standalone_forms() {
        let a = parse("redis://127.0.0.1:6380/2");
        assert_eq!(a.topology, Topology::Standalone(at("127.0.0.1", 6380)));
        assert_eq!((a.tls, a.database), (false, Some(2)));

        let a = parse("rediss://default:s%40cret@my-valkey.flycast");
        assert_eq!(
            a.topology,
            Topology::Standalone(at("my-valkey.flycast", 6379))
        );
        assert!(a.tls);
        assert_eq!(a.user.as_deref(), Some("default"));
        assert_eq!(a.password.as_deref(), Some("s@cret"));
        assert_eq!(a.to_string(), "rediss://default:***@my-valkey.flycast");
        assert!(!format!("{a:?}").contains("cret"));

        let a = parse("valkey://:pw@[fdaa:0:1::3]:6379");
        assert_eq!(a.topology, Topology::Standalone(at("fdaa:0:1::3", 6379)));
        assert_eq!(
            (a.user.as_deref(), a.password.as_deref()),
            (None, Some("pw"))
        );

        let a = parse("redis://my-valkey.internal");
        assert_eq!(
            a.topology,
            Topology::Standalone(at("my-valkey.internal", 6379))
        );
    }

    #[test]
    fn sentinel_and_cluster_forms() {
        let a = parse(
            "redis-sentinel://jobs:pw@s1.internal?master=jobs&node=[fdaa::4]:26380&node=s3.internal&sentinel_password=sp",
        );
        assert_eq!(
            a.topology,
            Topology::Sentinel {
                master: "jobs".into(),
                sentinels: vec![
                    at("s1.internal", 26379),
                    at("fdaa::4", 26380),
                    at("s3.internal", 26379)
                ],
                user: None,
                password: Some("sp".into()),
            }
        );
        assert_eq!(
            a.to_string(),
            "redis-sentinel://jobs:***@s1.internal?master=jobs&node=[fdaa::4]:26380&node=s3.internal&sentinel_password=***"
        );

        let a = parse("rediss-cluster://n1:7000?node=n2:7001&node=n3:7002");
        assert_eq!(
            a.topology,
            Topology::Cluster(vec![at("n1", 7000), at("n2", 7001), at("n3", 7002)])
        );
        assert!(a.tls);
    }

    #[test]
    fn bad_urls_name_the_part_and_hide_the_password() {
        let cases = [
            ("http://u:hunter2@host", "scheme"),
            ("redis://u:hunter2@host:99999", "URL"),
            ("redis://u:hunter2@host/x", "database"),
            ("redis://u:hunter2@host?node=a:1", "query"),
            ("redis://u:hunter2@host?sentinelServiceName=m", "query"),
            ("redis-sentinel://u:hunter2@host", "master"),
            ("redis-sentinel://u:hunter2@host?master=m&node=a:b", "node"),
            ("redis-cluster://u:hunter2@host/1", "database"),
            ("redis://u:hunter2@", "URL"),
            ("u:hunter2@host:6379", "scheme"),
        ];
        for (text, part) in cases {
            let e = error(text);
            assert_eq!(e.part, part, "{text}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{text}: {e}");
        }
    }
}
