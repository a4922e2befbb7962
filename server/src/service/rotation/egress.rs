//! Where the rotation engine may connect: the egress policy for database, SSH and
//! webhook targets.
//!
//! A rotation connects to hosts that secrets and policies name, from inside the
//! network the server runs in. Without a limit anyone allowed to write such a secret or
//! policy could aim the engine at internal services (server-side request forgery). So
//! every target is resolved here, each address is checked, and the connection goes to a
//! checked address only (the host name is still used for TLS and SNI), so a DNS answer
//! that changes between the check and the connection cannot slip past it.
//!
//! - By default every address is allowed except link-local ones (`169.254.0.0/16`,
//!   `fe80::/10`) and the cloud metadata services (`100.100.100.200`, Alibaba Cloud;
//!   `fd00:ec2::254`, AWS over IPv6; `168.63.129.16`, Azure's WireServer; AWS, Azure
//!   and GCP use `169.254.169.254`). Loopback is allowed (a database on the same host).
//! - `strongbox server --rotation-egress-allow CIDR[,CIDR…]` allows only the networks
//!   listed (a bare address is a /32 or /128); a metadata address is then reachable
//!   only if a listed network holds it.
//! - Never: the unspecified address (`0.0.0.0`, `::`, which Linux takes for the local
//!   host), broadcast and multicast.
//!
//! IPv4 addresses written as IPv6 (`::ffff:a.b.c.d`, `::a.b.c.d`, NAT64's
//! `64:ff9b::a.b.c.d`) are checked as IPv4.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::error::{Error, Result};
use strongbox_schemas::ErrorCode;

/// Addresses refused by default (and allowed only when a listed network holds them).
const DEFAULT_DENY_TEXT: [&str; 5] = [
    "169.254.0.0/16",
    "fe80::/10",
    "100.100.100.200/32",
    "fd00:ec2::254/128",
    // Azure's WireServer.
    "168.63.129.16/32",
];

/// [`DEFAULT_DENY_TEXT`], parsed once.
static DEFAULT_DENY: std::sync::LazyLock<Vec<IpNet>> = std::sync::LazyLock::new(|| {
    DEFAULT_DENY_TEXT
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
});

/// The networks rotations may connect to. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// `None`: the default rule; `Some`: only these networks.
    allow: Option<Arc<[IpNet]>>,
}

impl EgressPolicy {
    /// Only the networks in `list` (comma-separated CIDRs or addresses), as given to
    /// `--rotation-egress-allow`.
    pub fn parse(list: &str) -> std::result::Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "{item:?} is not a network (CIDR such as 10.0.0.0/8) or an address"
                        ));
                    }
                },
            };
            nets.push(net);
        }
        if nets.is_empty() {
            return Err("name at least one network".into());
        }
        Ok(Self {
            allow: Some(nets.into()),
        })
    }

    /// Whether a rotation may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        // The IPv4 address an IPv6 one carries is what it reaches; the denials look at
        // both forms, a listed network may name either (`64:ff9b::/96` for NAT64).
        let v4 = embedded_v4(ip);
        let never = |a: IpAddr| {
            a.is_unspecified() || a.is_multicast() || a == IpAddr::V4(Ipv4Addr::BROADCAST)
        };
        if never(ip) || never(v4) {
            return false;
        }
        // A listed IPv6 network matches the IPv6 form only of NAT64 addresses (where
        // the prefix is the route): `::/0` must not open every IPv4 address.
        let nat64 =
            matches!(ip, IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]);
        match &self.allow {
            Some(nets) => nets
                .iter()
                .any(|n| n.contains(&v4) || (nat64 && n.contains(&ip))),
            None => !DEFAULT_DENY
                .iter()
                .any(|n| n.contains(&ip) || n.contains(&v4)),
        }
    }

    /// The addresses of `host` a rotation may connect to, in the resolver's order.
    /// Fails when it resolves to none of them; the message names the host, not which
    /// networks are allowed.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| refused(format!("host {host} could not be resolved")))?
                .collect(),
        };
        let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| self.permits(a.ip())).collect();
        if allowed.is_empty() {
            return Err(refused(format!(
                "host {host} has no address this server may connect to for rotation \
                 (see --rotation-egress-allow)"
            )));
        }
        Ok(allowed)
    }
}

/// The IPv4 address an IPv6 one carries, where one is carried: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated but still routed by
/// some stacks) and the NAT64 well-known prefix (`64:ff9b::a.b.c.d`). Otherwise `ip`.
fn embedded_v4(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let low = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // `::` and `::1` stay IPv6 (unspecified and loopback).
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return IpAddr::V4(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(low);
    }
    ip
}

fn refused(message: String) -> Error {
    Error::new(ErrorCode::RotationFailed, message)
}

/// A reqwest resolver that returns only permitted addresses: a webhook's connection
/// goes through the policy however its host name resolves at that moment.
#[derive(Debug, Clone)]
pub(crate) struct Resolver(pub(crate) EgressPolicy);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            // reqwest puts the URL's port in later; 0 is a placeholder.
            let addrs = policy
                .resolve(name.as_str(), 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.message.into() })?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_keeps_rotations_off_link_local_and_metadata_addresses() {
        let p = EgressPolicy::default();
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.5",
            "::1",
            "2001:db8::1",
            "8.8.8.8",
        ] {
            assert!(p.permits(ip(ok)), "{ok}");
        }
        for no in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::169.254.169.254",
            "::a9fe:a9fe",
            "168.63.129.16",
            "fe80::1",
            "100.100.100.200",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
            "::ffff:0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(!p.permits(ip(no)), "{no}");
        }
        assert!(!p.permits(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    }

    #[test]
    fn an_allow_list_allows_only_its_networks() {
        let p = EgressPolicy::parse(" 10.0.0.0/8, 192.168.7.9 ,fd00::/8").unwrap();
        assert!(p.permits(ip("10.200.0.1")));
        assert!(p.permits(ip("::ffff:10.0.0.1")));
        assert!(p.permits(ip("64:ff9b::10.0.0.1")));
        assert!(!p.permits(ip("::1")), "::1 is loopback, not 0.0.0.1");
        assert!(p.permits(ip("192.168.7.9")));
        assert!(!p.permits(ip("192.168.7.10")));
        assert!(p.permits(ip("fd00:ec2::1")));
        // NAT64: a listed IPv6 prefix holds the IPv6 form.
        let nat64 = EgressPolicy::parse("64:ff9b::/96").unwrap();
        assert!(nat64.permits(ip("64:ff9b::10.1.2.3")));
        assert!(!nat64.permits(ip("64:ff9b::0.0.0.0")));
        // An IPv6 network does not open IPv4 addresses written as IPv6.
        let v6_all = EgressPolicy::parse("::/0").unwrap();
        assert!(v6_all.permits(ip("2001:db8::1")));
        assert!(!v6_all.permits(ip("::ffff:169.254.169.254")));
        assert!(!v6_all.permits(ip("::ffff:10.0.0.1")));
        assert!(!p.permits(ip("127.0.0.1")));
        assert!(!p.permits(ip("169.254.169.254")));
        // A listed network can open a metadata address on purpose, never `0.0.0.0`.
        let p = EgressPolicy::parse("0.0.0.0/0").unwrap();
        assert!(p.permits(ip("169.254.169.254")));
        assert!(!p.permits(ip("0.0.0.0")));
        // Host bits are dropped, as `ip route` would.
        let p = EgressPolicy::parse("10.1.2.3/16").unwrap();
        assert!(p.permits(ip("10.1.99.1")));
    }

    #[test]
    fn bad_lists_are_refused_with_the_item() {
        let e = EgressPolicy::parse("10.0.0.0/8,db.internal").unwrap_err();
        assert!(e.contains("db.internal"), "{e}");
        assert!(EgressPolicy::parse(" , ").is_err());
        assert!(EgressPolicy::parse("10.0.0.0/33").is_err());
    }

    #[tokio::test]
    async fn the_webhook_resolver_returns_only_permitted_addresses() {
        use reqwest::dns::Resolve as _;
        use std::str::FromStr as _;
        let name = || reqwest::dns::Name::from_str("localhost").unwrap();
        let refused = Resolver(EgressPolicy::parse("10.0.0.0/8").unwrap())
            .resolve(name())
            .await;
        assert!(refused.is_err());
        let addrs: Vec<SocketAddr> = Resolver(EgressPolicy::parse("127.0.0.0/8").unwrap())
            .resolve(name())
            .await
            .unwrap()
            .collect();
        assert!(
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.ip().is_ipv4())
        );
    }

    #[tokio::test]
    async fn resolving_keeps_only_permitted_addresses() {
        let p = EgressPolicy::parse("127.0.0.0/8").unwrap();
        let a = p.resolve("localhost", 5432).await.unwrap();
        assert!(
            a.iter().all(|a| a.ip().is_loopback() && a.port() == 5432),
            "{a:?}"
        );
        let e = p.resolve("::1", 22).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::RotationFailed);
        assert!(e.message.contains("host ::1"), "{}", e.message);
        let e = EgressPolicy::default()
            .resolve("169.254.169.254", 80)
            .await
            .unwrap_err();
        assert!(
            e.message.contains("--rotation-egress-allow"),
            "{}",
            e.message
        );
    }
}
