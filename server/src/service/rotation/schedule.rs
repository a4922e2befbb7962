//! The scheduler's durable index: `u64be(due) ‖ job` in [`Table::RotationSchedule`].
//!
//! Every record that can fall due (a secret under an enabled policy, a key with
//! automatic rotation or a scheduled deletion, a secret waiting for its purge) keeps the due time under which it
//! is indexed, so a change re-indexes it in the same write job: the old entry is
//! deleted, the new one put. A tick reads the index from its start and stops at the
//! first entry that is not due, so its cost follows the due jobs, not the table sizes.

use super::super::records::{KeyRecord, KeyStateRec, PolicyRecord, SecretRecord, load};
use crate::error::Result;
use crate::storage::{Reader, Table, Txn};

/// What an index entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Job {
    /// Rotate (or resume rotating) a secret.
    Secret(String),
    /// Rotate a key automatically.
    Key(String),
    /// Purge a secret whose recovery window has passed.
    Purge(String),
    /// Destroy the material of a key whose deletion falls due.
    Destroy(String),
}

impl Job {
    fn encode(&self) -> String {
        match self {
            Job::Secret(n) => format!("secret/{n}"),
            Job::Key(k) => format!("key/{k}"),
            Job::Purge(n) => format!("purge/{n}"),
            Job::Destroy(k) => format!("destroy/{k}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        if let Some(n) = s.strip_prefix("secret/") {
            Some(Job::Secret(n.to_string()))
        } else if let Some(k) = s.strip_prefix("key/") {
            Some(Job::Key(k.to_string()))
        } else if let Some(k) = s.strip_prefix("destroy/") {
            Some(Job::Destroy(k.to_string()))
        } else {
            s.strip_prefix("purge/").map(|n| Job::Purge(n.to_string()))
        }
    }
}

/// The index key of `job` due at `due` (times before 1970 sort first).
pub(crate) fn entry_key(due: i64, job: &Job) -> Vec<u8> {
    let due = u64::try_from(due.max(0)).unwrap_or(0);
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(job.encode().as_bytes());
    k
}

fn split_entry(key: &[u8]) -> Option<(i64, Job)> {
    let (due, job) = key.split_at_checked(8)?;
    let due = i64::try_from(u64::from_be_bytes(due.try_into().ok()?)).ok()?;
    Some((due, Job::decode(std::str::from_utf8(job).ok()?)?))
}

/// Moves `job` from `old` to `new` in the index (either may be absent).
pub(crate) fn move_entry(t: &mut Txn<'_>, job: &Job, old: Option<i64>, new: Option<i64>) {
    if old == new {
        return;
    }
    if let Some(o) = old {
        t.delete(Table::RotationSchedule, &entry_key(o, job));
    }
    if let Some(n) = new {
        t.put(Table::RotationSchedule, &entry_key(n, job), Vec::new());
    }
}

/// Where in its window a secret's rotation starts: a stable offset in `[0, window)`
/// drawn from its name and the due time, so that secrets under one policy spread out
/// and re-indexing the same state gives the same entry.
fn jitter(name: &str, due: i64, window_secs: u64) -> i64 {
    if window_secs == 0 {
        return 0;
    }
    let mut input = name.as_bytes().to_vec();
    input.extend_from_slice(&due.to_be_bytes());
    let h = crate::barrier::sha256(&input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    i64::try_from(u64::from_be_bytes(first) % window_secs).unwrap_or(0)
}

/// Wait before a rotation that failed after its *create* step is resumed by the scheduler
/// (`POST /v1/secrets/{name}/rotate` resumes it at once).
pub(crate) const RESUME_AFTER_FAILURE_SECS: i64 = 300;

/// The time a secret's rotation job should sit under in the index.
pub(crate) fn secret_due(rec: &SecretRecord, policy: Option<&PolicyRecord>) -> Option<i64> {
    // Pending deletion: nothing rotates (a restore indexes it again).
    if rec.planned_delete_time.is_some() {
        return None;
    }
    if let Some(p) = &rec.rotation.in_progress
        && !super::abandoned(rec)
    {
        // A begun rotation is due from its start until it ends, so a restart resumes it;
        // one that failed after *create* is tried again a while after the failure. The
        // scheduler does either only under a policy that is enabled: one disabled (a
        // compromised webhook switched off, say) rotates nothing, also not what it had
        // begun; `POST …/rotate` resumes it.
        if !policy.is_some_and(|p| p.enabled) {
            return None;
        }
        return match rec.rotation.last_failure {
            Some(f) if f >= p.started => Some(f.saturating_add(RESUME_AFTER_FAILURE_SECS)),
            _ => Some(p.started),
        };
    }
    let due = rec.next_rotation_date(policy)?;
    let window = policy.map_or(0, |p| p.window.seconds());
    Some(due.saturating_add(jitter(&rec.name, due, window)))
}

/// Re-indexes a secret after a change (policy, rotation, deletion, restore); the
/// caller writes the record.
pub(crate) fn reindex_secret(t: &mut Txn<'_>, rec: &mut SecretRecord) -> Result<()> {
    let policy: Option<PolicyRecord> = match &rec.rotation_policy {
        Some(p) => load(t, Table::RotationPolicies, p.as_bytes())?,
        None => None,
    };
    reindex_secret_with(t, rec, policy.as_ref());
    Ok(())
}

/// [`reindex_secret`] with the policy at hand.
pub(crate) fn reindex_secret_with(
    t: &mut Txn<'_>,
    rec: &mut SecretRecord,
    policy: Option<&PolicyRecord>,
) {
    let due = secret_due(rec, policy);
    move_entry(
        t,
        &Job::Secret(rec.name.clone()),
        rec.rotation.scheduled,
        due,
    );
    rec.rotation.scheduled = due;
    let purge = rec.planned_delete_time;
    move_entry(
        t,
        &Job::Purge(rec.name.clone()),
        rec.rotation.purge_scheduled,
        purge,
    );
    rec.rotation.purge_scheduled = purge;
}

/// Removes every entry of a secret that is going away.
pub(crate) fn unindex_secret(t: &mut Txn<'_>, rec: &SecretRecord) {
    move_entry(
        t,
        &Job::Secret(rec.name.clone()),
        rec.rotation.scheduled,
        None,
    );
    move_entry(
        t,
        &Job::Purge(rec.name.clone()),
        rec.rotation.purge_scheduled,
        None,
    );
}

/// Re-indexes a key (automatic rotation, scheduled destruction) after a change; the
/// caller writes the record.
pub(crate) fn reindex_key(t: &mut Txn<'_>, rec: &mut KeyRecord) {
    let due = rec.next_rotation_date();
    move_entry(
        t,
        &Job::Key(rec.key_id.clone()),
        rec.scheduled_rotation,
        due,
    );
    rec.scheduled_rotation = due;
    let destroy = rec
        .delete_date
        .filter(|_| rec.state == KeyStateRec::PendingDeletion);
    move_entry(
        t,
        &Job::Destroy(rec.key_id.clone()),
        rec.scheduled_destroy,
        destroy,
    );
    rec.scheduled_destroy = destroy;
}

/// Up to `limit` jobs due at `now`, earliest first. Reads the index only, and stops at
/// the first entry that is not due.
pub(crate) fn due_jobs(
    r: &(impl Reader + ?Sized),
    now: i64,
    limit: usize,
) -> Result<Vec<(i64, Job)>> {
    const CHUNK: usize = 256;
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let want = CHUNK.min(limit - out.len()).max(1);
        let batch = r.scan(Table::RotationSchedule, b"", after.as_deref(), want)?;
        let exhausted = batch.len() < want;
        for (k, _) in batch {
            match split_entry(&k) {
                Some((due, _)) if due > now => return Ok(out),
                Some(entry) => out.push(entry),
                None => tracing::warn!("skipping a malformed schedule entry"),
            }
            if out.len() >= limit {
                return Ok(out);
            }
            after = Some(k);
        }
        if exhausted {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_by_due_time_then_job() {
        let a = entry_key(100, &Job::Secret("z".into()));
        let b = entry_key(101, &Job::Secret("a".into()));
        let c = entry_key(101, &Job::Secret("b".into()));
        assert!(a < b && b < c);
        assert_eq!(split_entry(&b), Some((101, Job::Secret("a".into()))));
        assert_eq!(
            split_entry(&entry_key(5, &Job::Key("k/1".into()))),
            Some((5, Job::Key("k/1".into())))
        );
        assert_eq!(
            split_entry(&entry_key(5, &Job::Purge("p".into()))),
            Some((5, Job::Purge("p".into())))
        );
        assert_eq!(
            split_entry(&entry_key(5, &Job::Destroy("k".into()))),
            Some((5, Job::Destroy("k".into())))
        );
    }

    #[test]
    fn jitter_stays_inside_the_window_and_is_stable() {
        for i in 0..1000 {
            let name = format!("s{i}");
            let j = jitter(&name, 1_000_000, 3_600);
            assert!((0..3_600).contains(&j));
            assert_eq!(j, jitter(&name, 1_000_000, 3_600));
        }
        assert_eq!(jitter("x", 5, 0), 0);
    }
}
