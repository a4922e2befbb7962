//! The strategy trait: what a rotation does in the target system at each of the four
//! steps, and the conformance suite every strategy passes.

use zeroize::Zeroizing;

use super::access_key::AccessKeyStrategy;
use super::database::DatabaseStrategy;
use super::egress::EgressPolicy;
use super::random::RandomStrategy;
use super::ssh_key::SshKeyStrategy;
use super::webhook::WebhookStrategy;
use crate::error::{Error, Result};
use crate::service::records::VersionMeta;
use strongbox_schemas::{ErrorCode, RotationStrategy};

/// The four steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Set => "set",
            Step::Test => "test",
            Step::Finish => "finish",
        }
    }
}

/// What a step knows about the rotation. Values are plaintext: never log them.
pub(crate) struct StepContext<'a> {
    pub(crate) secret_name: &'a str,
    /// The version being made.
    pub(crate) version_id: &'a str,
    /// `ACSCurrent`'s value (for *create*).
    pub(crate) current: Option<&'a [u8]>,
    /// The pending value (for *set*, *test* and *finish*).
    pub(crate) pending: Option<&'a [u8]>,
    /// The version the step starts from: `ACSCurrent` for *create*, the pending one
    /// for the later steps (`None` in the conformance suite, which has no secret).
    pub(crate) written: Option<&'a VersionMeta>,
}

/// One rotation strategy. Every step must be idempotent: after a crash the engine
/// repeats the step it was in, and a step that fails is retried.
pub(crate) trait Strategy {
    /// Makes the pending value (the engine stores it as the `ACSPending` version).
    async fn create(&self, cx: &StepContext<'_>) -> Result<Zeroizing<Vec<u8>>>;
    /// Applies the pending value in the target system.
    async fn set(&self, cx: &StepContext<'_>) -> Result<()>;
    /// Proves the pending value works in the target system.
    async fn test(&self, cx: &StepContext<'_>) -> Result<()>;
    /// Last word before the engine moves `ACSCurrent` to the pending version.
    async fn finish(&self, cx: &StepContext<'_>) -> Result<()>;
}

/// The strategies this server runs.
pub(crate) enum AnyStrategy {
    Random(RandomStrategy),
    Webhook(WebhookStrategy),
    /// Built by the engine (it needs the service): `Service::strategy_for`.
    AccessKey(AccessKeyStrategy),
    /// Built by the engine (it needs the service): `Service::strategy_for`.
    SshKey(SshKeyStrategy),
    /// `postgresql` and `mysql` (built per secret, see `Service::database_strategy`).
    Database(Box<DatabaseStrategy>),
}

impl AnyStrategy {
    /// `signing_key` is the value of the webhook's signing secret, read by the caller.
    pub(crate) fn build(
        kind: RotationStrategy,
        settings: &std::collections::BTreeMap<String, String>,
        signing_key: impl FnOnce(&str) -> Result<Zeroizing<Vec<u8>>>,
        egress: &EgressPolicy,
    ) -> Result<Self> {
        match kind {
            RotationStrategy::Random => Ok(Self::Random(RandomStrategy::from_settings(settings)?)),
            RotationStrategy::Webhook => Ok(Self::Webhook(WebhookStrategy::from_settings(
                settings,
                signing_key,
                egress,
            )?)),
            other => Err(Error::new(
                ErrorCode::RotationFailed,
                format!("strategy {other:?} is not available on this server yet"),
            )),
        }
    }
}

impl AnyStrategy {
    /// Account names this strategy knows beyond the secret's own values, which a failure
    /// kept on the secret withholds: a database's admin, previous and clone accounts.
    pub(crate) fn account_names(&self) -> Vec<String> {
        match self {
            Self::Database(s) => s.account_names(),
            _ => Vec::new(),
        }
    }
}

impl Strategy for AnyStrategy {
    async fn create(&self, cx: &StepContext<'_>) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            Self::Random(s) => s.create(cx).await,
            Self::Webhook(s) => s.create(cx).await,
            Self::AccessKey(s) => s.create(cx).await,
            Self::SshKey(s) => s.create(cx).await,
            Self::Database(s) => s.create(cx).await,
        }
    }
    async fn set(&self, cx: &StepContext<'_>) -> Result<()> {
        match self {
            Self::Random(s) => s.set(cx).await,
            Self::Webhook(s) => s.set(cx).await,
            Self::AccessKey(s) => s.set(cx).await,
            Self::SshKey(s) => s.set(cx).await,
            Self::Database(s) => s.set(cx).await,
        }
    }
    async fn test(&self, cx: &StepContext<'_>) -> Result<()> {
        match self {
            Self::Random(s) => s.test(cx).await,
            Self::Webhook(s) => s.test(cx).await,
            Self::AccessKey(s) => s.test(cx).await,
            Self::SshKey(s) => s.test(cx).await,
            Self::Database(s) => s.test(cx).await,
        }
    }
    async fn finish(&self, cx: &StepContext<'_>) -> Result<()> {
        match self {
            Self::Random(s) => s.finish(cx).await,
            Self::Webhook(s) => s.finish(cx).await,
            Self::AccessKey(s) => s.finish(cx).await,
            Self::SshKey(s) => s.finish(cx).await,
            Self::Database(s) => s.finish(cx).await,
        }
    }
}

/// The shared conformance suite: runs a strategy through the four steps twice each
/// (steps are idempotent), as the engine does after a crash. `current` is the value
/// before the rotation.
#[cfg(any(test, feature = "failpoints"))]
pub(crate) async fn conformance<S: Strategy>(s: &S, current: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    conformance_of(s, "conformance/secret", current).await
}

/// [`conformance`] for a strategy that reads the secret it rotates (by `secret_name`).
#[cfg(any(test, feature = "failpoints"))]
pub(crate) async fn conformance_of<S: Strategy>(
    s: &S,
    secret_name: &str,
    current: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let mut cx = StepContext {
        secret_name,
        version_id: "conformance-v1",
        current: Some(current),
        pending: None,
        written: None,
    };
    let first = s.create(&cx).await?;
    let again = s.create(&cx).await?;
    if first.is_empty() || again.is_empty() {
        return Err(Error::internal("create made an empty value"));
    }
    if first.as_slice() == current {
        return Err(Error::internal("create returned the current value"));
    }
    cx.pending = Some(&first);
    for _ in 0..2 {
        s.set(&cx).await?;
    }
    for _ in 0..2 {
        s.test(&cx).await?;
    }
    for _ in 0..2 {
        s.finish(&cx).await?;
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn random_passes_the_conformance_suite() {
        let settings = [("length".to_string(), "20".to_string())].into();
        let s = AnyStrategy::build(
            RotationStrategy::Random,
            &settings,
            |_| unreachable!("random needs no key"),
            &EgressPolicy::default(),
        )
        .unwrap();
        let v = conformance(&s, b"old").await.unwrap();
        assert_eq!(v.len(), 20);
    }

    #[tokio::test]
    async fn unknown_strategies_fail_with_a_stable_code() {
        let e = AnyStrategy::build(
            RotationStrategy::Mysql,
            &Default::default(),
            |_| unreachable!(),
            &EgressPolicy::default(),
        )
        .err()
        .unwrap();
        assert_eq!(e.code, ErrorCode::RotationFailed);
    }
}
