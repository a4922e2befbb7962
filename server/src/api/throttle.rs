//! Requests without a valid token, limited per client address.
//!
//! Every request the server answers is recorded in the audit trail, and each record is
//! a durable commit: without a limit, anyone who can reach the port could fill the disk
//! and slow every real request with requests that carry no token (or a wrong one). So
//! each client address (an IPv6 client's /64, as for connections) may send so many of
//! them a second, in bursts of ten seconds' worth; past that they are answered 429
//! `TooManyRequests` with `Retry-After`, and only the first such refusal of an address
//! in a minute is recorded. The others are counted in the metrics
//! (`strongbox_http_requests_unrecorded_total`) and logged, as Vault leaves requests
//! refused by its rate-limit quotas out of its audit log. Requests with a valid token
//! are never refused so, and the public routes (`/v1/health`) are not counted.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota};

/// How often (in checks) the limiters drop addresses whose allowance is whole again.
const SWEEP_EVERY: u64 = 4096;

/// What to do with a request that has no valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the address's allowance: answered and recorded as usual.
    Admit,
    /// Refused (429), and recorded: the first refusal of the address this minute.
    RefuseRecorded,
    /// Refused (429), not recorded.
    RefuseUnrecorded,
}

/// The per-address limiters.
pub(super) struct Unauthenticated {
    per_second: u32,
    requests: DefaultKeyedRateLimiter<IpAddr>,
    recorded_refusals: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

impl Unauthenticated {
    /// `per_second` requests a second per address, in bursts of ten times as many;
    /// `None` for 0 (no limit: every request is admitted and recorded).
    pub(super) fn new(per_second: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(10)).unwrap_or(rate);
        Some(Self {
            per_second,
            requests: governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            recorded_refusals: governor::RateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN)),
            checks: AtomicU64::new(0),
        })
    }

    /// The allowance per second.
    pub(super) fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Counts a request without a valid token from `ip` against its address.
    pub(super) fn check(&self, ip: IpAddr) -> Verdict {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.requests.retain_recent();
            self.recorded_refusals.retain_recent();
        }
        let client = crate::tls::client_of(ip);
        if self.requests.check_key(&client).is_ok() {
            Verdict::Admit
        } else if self.recorded_refusals.check_key(&client).is_ok() {
            Verdict::RefuseRecorded
        } else {
            Verdict::RefuseUnrecorded
        }
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
    fn no_limit_at_zero() {
        assert!(Unauthenticated::new(0).is_none());
    }
}
