//! [`CallbackTargets`]: where a `callback_url` may point. By default only
//! public addresses: no loopback, private (RFC 1918, CGNAT), link-local
//! (169.254.169.254 included), unique-local IPv6 (`fc00::/7`, so Fly's
//! private network `fdaa::/16` too), multicast or reserved address, and no
//! `localhost`, `*.internal` or `*.flycast` name; otherwise any job
//! submitter could make the dispatcher POST inside your network.
//!
//! The check runs twice: on the URL when the job is submitted (a clear 422)
//! and on every address the name resolves to when the callback is sent
//! ([`GuardedResolver`], so a name that resolves to a public address at
//! submit time and to a private one later, DNS rebinding, is still
//! refused). Redirects are never followed.
//!
//! `--callback-allow-hosts` (`CALLBACK_ALLOW_HOSTS`) names hosts (names or
//! IP literals, compared case-insensitively) that may be internal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// The hosts allowed to be internal; everything else must be public.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct CallbackTargets {
    allow_hosts: Arc<[String]>,
}

impl From<Vec<String>> for CallbackTargets {
    fn from(hosts: Vec<String>) -> Self {
        Self::allowing(hosts)
    }
}

impl From<CallbackTargets> for Vec<String> {
    fn from(targets: CallbackTargets) -> Self {
        targets.allow_hosts.to_vec()
    }
}

impl CallbackTargets {
    pub fn allowing(hosts: impl IntoIterator<Item = String>) -> Self {
        Self {
            allow_hosts: hosts
                .into_iter()
                .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    fn allows_any(&self, host: &str) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        self.allow_hosts.contains(&host)
    }

    /// Why the dispatcher will not send to `url`, or `None` when it may
    /// (as far as can be told before resolving its name).
    pub fn refusal(&self, url: &Url) -> Option<String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Some("must be an http(s) URL with a host".into());
        }
        let host = match url.host() {
            None => return Some("must be an http(s) URL with a host".into()),
            Some(host) => host,
        };
        let text = host.to_string();
        if self.allows_any(&text) {
            return None;
        }
        let internal = match host {
            url::Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
            url::Host::Domain(name) => is_internal_name(name),
        };
        internal.then(|| {
            format!(
                "{text} is a loopback, private, link-local or internal address; \
                 only public hosts receive callbacks (see --callback-allow-hosts)"
            )
        })
    }

    /// A resolver for the callback client that drops every non-public
    /// address of a host that is not allow-listed.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            targets: self.clone(),
        })
    }
}

fn is_internal_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || [".localhost", ".internal", ".flycast", ".local"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        || !name.contains('.')
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            // Addresses that embed an IPv4 one are judged by it:
            // IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
            }
            if s[0] == 0x2002 {
                return is_public_v4(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32));
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7, fdaa::/16 among them
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0xdb8) // documentation
        || ip.segments()[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
}

/// Resolves like the system does, then keeps only the addresses a
/// callback may reach (all of them for an allow-listed host). A host
/// left with none fails to connect, naming why.
#[derive(Debug)]
pub struct GuardedResolver {
    targets: CallbackTargets,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let allowed = self.targets.allows_any(&host);
        Box::pin(async move {
            if !allowed && is_internal_name(&host) {
                return Err(format!("{host} is an internal name").into());
            }
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = reachable(&host, found, allowed)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The resolved addresses a callback may connect to; an error when none.
fn reachable(
    host: &str,
    found: impl IntoIterator<Item = SocketAddr>,
    allowed: bool,
) -> Result<Vec<SocketAddr>, String> {
    let kept: Vec<SocketAddr> = found
        .into_iter()
        .filter(|addr| allowed || is_public(addr.ip()))
        .collect();
    if kept.is_empty() {
        return Err(format!(
            "{host} resolves to no public address; not sending the callback"
        ));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(targets: &CallbackTargets, url: &str) -> bool {
        targets.refusal(&Url::parse(url).unwrap()).is_some()
    }

    #[test]
    fn only_public_targets_by_default() {
        let targets = CallbackTargets::default();
        for bad in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::]/",
            "http://[fdaa:0:1::3]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://localhost:8080/",
            "http://api.internal/",
            "http://my-app.flycast/",
            "http://printer.local/",
            "http://intranet/",
            "ftp://example.com/",
        ] {
            assert!(refused(&targets, bad), "{bad}");
        }
        for ok in [
            "https://example.com/hook",
            "http://93.184.216.34/",
            "http://[2606:4700::1111]/",
        ] {
            assert!(!refused(&targets, ok), "{ok}");
        }
    }

    #[test]
    fn resolved_addresses_are_filtered_at_connect_time() {
        // A public name that resolves to loopback later (DNS rebinding).
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        let rebound = [addr("127.0.0.1:0"), addr("[fdaa::3]:0")];
        assert!(reachable("hooks.example.com", rebound, false).is_err());
        let mixed = [addr("10.0.0.1:0"), addr("93.184.216.34:0")];
        assert_eq!(
            reachable("hooks.example.com", mixed, false).unwrap(),
            [addr("93.184.216.34:0")]
        );
        assert_eq!(reachable("allowed", rebound, true).unwrap().len(), 2);
    }

    #[test]
    fn allow_listed_hosts_may_be_internal() {
        let targets = CallbackTargets::allowing(["127.0.0.1".into(), "Hooks.Internal".into()]);
        assert!(!refused(&targets, "http://127.0.0.1:9000/"));
        assert!(!refused(&targets, "http://hooks.internal/"));
        assert!(refused(&targets, "http://127.0.0.2/"));
    }
}
