//! Requests without a valid token, limited per client address and server-wide.
//!
//! Every request the server answers is recorded in the audit trail, and each record is
//! a durable commit: without a limit, anyone who can reach the port could fill the disk
//! and slow every real request with requests that carry no token (or a wrong one). So
//! each client address (an IPv6 client's /64, as for connections) may have so many of
//! them answered a second, in bursts of ten seconds' worth, and the whole server twenty
//! times as many; past that they are answered 429 `TooManyRequests` with
//! `Retry-After`, and only the first such refusal of an address in a minute is recorded
//! (within the server-wide budget too). The others are counted in the metrics
//! (`strongbox_unauthenticated_requests_unrecorded_total`), as Vault leaves requests
//! refused by its rate-limit quotas out of its audit log. So requests without a valid
//! token add at most twenty times the per-address rate of records a second, however
//! many addresses send them. Requests with a valid token are never refused so, nor are
//! the public routes (`/v1/health`) counted.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// How often (in checks) the limiters drop addresses whose allowance is whole again.
const SWEEP_EVERY: u64 = 4096;
/// The server-wide budget, as a multiple of one address's.
const SERVER_WIDE: u32 = 20;

/// What to do with a request that has no valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the address's allowance: answered and recorded as usual.
    Admit,
    /// Refused (429), and recorded: the first refusal of the address this minute.
    RefuseRecorded,
    /// Refused (429), not recorded.
    RefuseUnrecorded,
    /// Refused (429), not recorded: the server-wide budget is spent. `log`: the first
    /// such refusal this minute.
    RefuseServerWide {
        /// Whether to log that the server-wide limit is reached.
        log: bool,
    },
}

/// The limiters: per address, and server-wide.
pub(super) struct Unauthenticated {
    per_second: u32,
    requests: DefaultKeyedRateLimiter<IpAddr>,
    recorded_refusals: DefaultKeyedRateLimiter<IpAddr>,
    /// Every recorded request without a valid token, whatever its address.
    server_wide: DefaultDirectRateLimiter,
    server_wide_logged: DefaultDirectRateLimiter,
    checks: AtomicU64,
}

impl Unauthenticated {
    /// `per_second` requests a second per address, in bursts of ten times as many, and
    /// twenty times that server-wide; `None` for 0 (no limit: every request is admitted
    /// and recorded).
    pub(super) fn new(per_second: u32) -> Option<Self> {
        let quota = |rate: u32| {
            let rate = NonZeroU32::new(rate)?;
            let burst = NonZeroU32::new(rate.get().saturating_mul(10)).unwrap_or(rate);
            Some(Quota::per_second(rate).allow_burst(burst))
        };
        let once_a_minute = Quota::per_minute(NonZeroU32::MIN);
        Some(Self {
            per_second,
            requests: governor::RateLimiter::keyed(quota(per_second)?),
            recorded_refusals: governor::RateLimiter::keyed(once_a_minute),
            server_wide: governor::RateLimiter::direct(quota(
                per_second.saturating_mul(SERVER_WIDE),
            )?),
            server_wide_logged: governor::RateLimiter::direct(once_a_minute),
            checks: AtomicU64::new(0),
        })
    }

    /// The allowance per second.
    pub(super) fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Counts a request without a valid token from `ip` against its address's allowance
    /// and, if it would be recorded, the server-wide budget.
    pub(super) fn check(&self, ip: IpAddr) -> Verdict {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.requests.retain_recent();
            self.recorded_refusals.retain_recent();
        }
        let client = crate::tls::client_of(ip);
        let verdict = if self.requests.check_key(&client).is_ok() {
            Verdict::Admit
        } else if self.recorded_refusals.check_key(&client).is_ok() {
            Verdict::RefuseRecorded
        } else {
            return Verdict::RefuseUnrecorded;
        };
        // What would be recorded also counts against the server-wide budget.
        if self.server_wide.check().is_ok() {
            verdict
        } else {
            Verdict::RefuseServerWide {
                log: self.server_wide_logged.check().is_ok(),
            }
        }
    }

    /// The 429's message.
    pub(super) fn message(&self) -> String {
        let n = self.per_second;
        format!(
            "too many requests without a valid token: one address may have {n} a second answered (in bursts of {}), the server {}; send a valid token: Authorization: Bearer TOKEN",
            n.saturating_mul(10),
            n.saturating_mul(SERVER_WIDE)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_burst_then_one_recorded_refusal() {
        let limit = Unauthenticated::new(1).unwrap();
        for i in 0..10 {
            assert_eq!(limit.check(ip("192.0.2.1")), Verdict::Admit, "request {i}");
        }
        assert_eq!(limit.check(ip("192.0.2.1")), Verdict::RefuseRecorded);
        for _ in 0..5 {
            assert_eq!(limit.check(ip("192.0.2.1")), Verdict::RefuseUnrecorded);
        }
        // Another address has its own allowance; an IPv6 client's /64 is one address.
        assert_eq!(limit.check(ip("192.0.2.2")), Verdict::Admit);
        for _ in 0..10 {
            assert_eq!(limit.check(ip("2001:db8:1:2::3")), Verdict::Admit);
        }
        assert_eq!(limit.check(ip("2001:db8:1:2::4")), Verdict::RefuseRecorded);
        assert_eq!(limit.check(ip("2001:db8:1:3::4")), Verdict::Admit);
        // An IPv4 client seen through an IPv4-mapped IPv6 address is the same client.
        assert_eq!(
            limit.check(ip("::ffff:192.0.2.1")),
            Verdict::RefuseUnrecorded
        );
    }

    #[test]
    fn the_server_wide_budget_bounds_many_addresses() {
        // 1 a second per address in bursts of 10; 20 a second server-wide, bursts of 200.
        let limit = Unauthenticated::new(1).unwrap();
        let mut admitted = 0;
        let mut logged = 0;
        for a in 0..50u8 {
            for _ in 0..10 {
                match limit.check(IpAddr::from([198, 51, 100, a])) {
                    Verdict::Admit => admitted += 1,
                    Verdict::RefuseServerWide { log } => logged += usize::from(log),
                    other => panic!("address {a}: {other:?}"),
                }
            }
        }
        // 500 asked, each address within its own allowance: the server's 200 (and what
        // refilled meanwhile) are answered, the limit is logged once.
        assert!((200..210).contains(&admitted), "{admitted}");
        assert_eq!(logged, 1);
        // An address past its own allowance: its first refusal would be recorded, which
        // the spent server-wide budget does not allow; the next ones are not recorded
        // anyway, whatever the server-wide budget.
        let first = IpAddr::from([198, 51, 100, 0]);
        assert_eq!(limit.check(first), Verdict::RefuseServerWide { log: false });
        assert_eq!(limit.check(first), Verdict::RefuseUnrecorded);
    }

    #[test]
    fn no_limit_at_zero() {
        assert!(Unauthenticated::new(0).is_none());
    }
}
