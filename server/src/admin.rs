//! Administration commands that talk to a running server through the API, with the
//! client SDK: principals, tokens, access policies and the audit trail. The server is
//! named by `STRONGBOX_ADDR`, `STRONGBOX_TOKEN` and `STRONGBOX_CACERT`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use strongbox_client::{AuditQuery, Client};
use strongbox_schemas::{self as api, Interval, PolicyDocument, Timestamp};

#[derive(Subcommand)]
pub(crate) enum PrincipalCommand {
    /// Create a principal.
    Create {
        /// Name (1–64 characters of A-Z a-z 0-9 _ . @ + = -).
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// An access policy to attach (repeat for several).
        #[arg(long = "policy")]
        policies: Vec<String>,
    },
    /// List principals.
    List,
    /// Delete a principal and revoke its tokens.
    Delete {
        /// Name.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token for a principal; prints it once.
    Create {
        /// The principal.
        principal: String,
        /// Expire after this long (e.g. 12h, 30d).
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// Expire at this time (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        /// Free text, e.g. where the token is used.
        #[arg(long)]
        description: Option<String>,
    },
    /// List a principal's tokens (never their values).
    List {
        /// The principal.
        principal: String,
    },
    /// Revoke a token, effective at once.
    Revoke {
        /// The principal.
        principal: String,
        /// The token's id (from `token list`).
        token_id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create an access policy from a JSON document file.
    Create {
        /// Name (1–128 characters of A-Z a-z 0-9 _ . -).
        name: String,
        /// The policy document (JSON).
        #[arg(long)]
        file: PathBuf,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// List access policies.
    List,
    /// Delete an access policy no principal uses.
    Delete {
        /// Name.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the HMAC chain of the whole trail (from its base, once pruned); exits 1
    /// naming the first bad record, 2
    /// when it could not be checked (no answer, a busy server or gateway, token refused).
    Verify {
        /// The anchor an earlier verify printed, kept outside the server: also check that
        /// the trail still holds those records, unchanged. (A trail cut back to an older
        /// head of its own verifies without it.)
        #[arg(long, value_name = "ANCHOR")]
        since: Option<String>,
    },
    /// Print the records, oldest first, one JSON object per line, and exit: the archive
    /// to keep before `audit prune`.
    Export {
        /// Stop after this record.
        #[arg(long)]
        through: Option<u64>,
    },
    /// Delete the oldest records, those older than --older-than (at least the server's
    /// minimum retention, 30 days by default), in batches until none is left; the trail
    /// still verifies from the base the prune leaves. Export them first (`audit
    /// export`) if they must be kept.
    Prune {
        /// Age of the records to delete, such as 90d or 2160h.
        #[arg(long, value_parser = parse_interval)]
        older_than: Interval,
    },
    /// Print the last records, then follow new ones (one JSON object per line).
    Tail {
        /// Records to print before following.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: u64,
        /// Seconds between polls (0.05–3600). A poll that finds the server unreachable or
        /// busy is retried, from the same place in the trail, with a growing pause.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Only this principal.
        #[arg(long)]
        principal: Option<String>,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
        /// Only resources starting with this (a record's resource or a related one).
        #[arg(long)]
        resource_prefix: Option<String>,
        /// Also show audit:Read records (hidden by default: they include tail's own polls).
        #[arg(long)]
        include_audit_reads: bool,
        /// Stop after this many records (for scripts and tests).
        #[arg(long, hide = true)]
        max: Option<u64>,
    },
}

pub(crate) fn client() -> anyhow::Result<Client> {
    Client::from_env().context(
        "connecting needs STRONGBOX_ADDR, STRONGBOX_TOKEN and (for a private CA) STRONGBOX_CACERT",
    )
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) async fn principal(cmd: PrincipalCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        PrincipalCommand::Create {
            name,
            description,
            policies,
        } => print_json(
            &c.create_principal(&api::CreatePrincipalRequest {
                name,
                description,
                policies: Some(policies),
            })
            .await?,
        ),
        PrincipalCommand::List => {
            for p in c.list_principals().await?.principals {
                outln!(
                    "{}\t{}\t{}",
                    p.name,
                    p.policies.join(","),
                    printable(&p.description)
                );
            }
            Ok(())
        }
        PrincipalCommand::Delete { name } => {
            c.delete_principal(&name).await?;
            outln!("Deleted principal {name} and revoked its tokens.");
            Ok(())
        }
    }
}

pub(crate) async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        TokenCommand::Create {
            principal,
            expires_in,
            expires_at,
            description,
        } => {
            let expires_at = match (expires_in, expires_at) {
                (Some(d), _) => {
                    let i =
                        Interval::parse(&d).map_err(|e| anyhow::anyhow!("--expires-in: {e}"))?;
                    let at = i64::try_from(i.seconds())
                        .ok()
                        .and_then(|s| {
                            time::OffsetDateTime::now_utc()
                                .unix_timestamp()
                                .checked_add(s)
                        })
                        .filter(|t| time::OffsetDateTime::from_unix_timestamp(*t).is_ok())
                        .context("--expires-in: too far in the future")?;
                    Some(Timestamp::from_unix(at))
                }
                (None, Some(t)) => Some(
                    serde_json::from_value::<Timestamp>(serde_json::Value::String(t))
                        .context("--expires-at: expected an RFC 3339 time")?,
                ),
                (None, None) => None,
            };
            let t = c
                .create_token(
                    &principal,
                    &api::CreateTokenRequest {
                        expires_at,
                        description,
                    },
                )
                .await?;
            eprintln!("The token is shown only this once; store it now.");
            crate::show_once(
                &zeroize::Zeroizing::new(serde_json::to_string_pretty(&t)? + "\n"),
                &format!(
                    "token {id} of principal {principal} was made but could not be shown: revoke it (strongbox token revoke {principal} {id}) and create another",
                    id = t.token_id
                ),
            )
        }
        TokenCommand::List { principal } => {
            for t in c.list_tokens(&principal).await?.tokens {
                let exp = t
                    .expires_at
                    .map(|e| e.to_string())
                    .unwrap_or("never".into());
                let state = if t.expired { "expired" } else { "valid" };
                outln!(
                    "{}\t{state}\texpires {exp}\t{}",
                    t.token_id,
                    printable(&t.description)
                );
            }
            Ok(())
        }
        TokenCommand::Revoke {
            principal,
            token_id,
        } => {
            c.delete_token(&principal, &token_id).await?;
            outln!("Revoked token {token_id} of {principal}.");
            Ok(())
        }
    }
}

pub(crate) async fn policy(cmd: PolicyCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        PolicyCommand::Create {
            name,
            file,
            description,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let document: PolicyDocument = text
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print_json(
                &c.create_policy(&api::CreatePolicyRequest {
                    name,
                    description,
                    document,
                })
                .await?,
            )
        }
        PolicyCommand::List => {
            for p in c.list_policies().await?.policies {
                let kind = if p.builtin { "built-in" } else { "custom" };
                outln!(
                    "{}\t{kind}\t{} statements\t{}",
                    p.name,
                    p.document.as_ref().map_or(0, |d| d.statements().len()),
                    printable(&p.description)
                );
            }
            Ok(())
        }
        PolicyCommand::Delete { name } => {
            c.delete_policy(&name).await?;
            outln!("Deleted policy {name}.");
            Ok(())
        }
    }
}

/// `audit verify`: exit 0 for an intact trail, 1 for a broken one (or a server that
/// failed while checking it), 2 when there is no verdict.
async fn verify(c: &Client, since: Option<&str>) -> anyhow::Result<()> {
    let r = c.verify_audit_since(since).await.map_err(|e| {
        // Only the server itself failing while it checks its trail (its InternalError:
        // a record it could not read) counts against the trail. Anything else is no
        // verdict: not reached, refused, busy, no such endpoint (an older server), or an
        // answer that is not the server's (a proxy's page, a body this client cannot
        // read, a newer server's code).
        let server_failed = e.code() == Some(strongbox_client::ErrorCode::InternalError);
        if server_failed {
            anyhow::anyhow!("audit trail NOT VERIFIED: the check failed: {e}")
        } else {
            anyhow::Error::new(VerifyUnavailable(e.to_string()))
        }
    })?;
    let pruned = if r.pruned > 0 {
        format!(" (records 1 to {} were pruned)", r.pruned)
    } else {
        String::new()
    };
    // A server that does not know anchors ignores `since` and reports none.
    if let (Some(_), true, None) = (since, r.intact, &r.anchor) {
        return Err(VerifyUnavailable(
            "the server does not check anchors (an older release): --since was not checked".into(),
        )
        .into());
    }
    if r.intact {
        outln!(
            "audit trail intact: {} records verified{pruned}",
            r.verified
        );
        // Pruned past the anchor's record, only its count could be checked.
        let pruned_past = since
            .and_then(|a| a.split_once(':'))
            .and_then(|(n, _)| n.parse::<u64>().ok())
            .is_some_and(|n| n < r.pruned);
        if pruned_past {
            outln!(
                "(the anchor's record was pruned: only its count was checked against the trail)"
            );
        }
        if let Some(a) = &r.anchor {
            outln!(
                "anchor: {a}\n(keep it outside the server: `strongbox audit verify --since {a}` later shows whether the trail still holds these records)"
            );
        }
        return Ok(());
    }
    let at = r
        .first_bad_seq
        .map_or("the head".to_string(), |s| format!("record {s}"));
    bail!(
        "audit trail BROKEN at {at}: {} ({} records verified before it, head says {}){pruned}",
        r.problem.unwrap_or_default(),
        r.verified,
        r.count
    )
}

/// What `audit export` makes of one page.
#[derive(Debug, PartialEq)]
struct ExportStep {
    /// The records to write, one JSON object a line.
    lines: String,
    /// The record due next.
    due: u64,
    /// `--through` reached.
    done: bool,
    /// Records due (up to `--through`) that are not there.
    missing: Option<String>,
}

/// The records of a page from `due` on, up to `through`: a record due that is not there
/// (pruned meanwhile, or deleted) is an error, unless it lies past `through`.
fn export_page(
    records: &[api::AuditRecord],
    mut due: u64,
    through: Option<u64>,
) -> anyhow::Result<ExportStep> {
    let mut lines = String::new();
    for r in records {
        if r.seq != due && through.is_none_or(|t| due <= t) {
            let last = through.map_or(r.seq.saturating_sub(1), |t| t.min(r.seq.saturating_sub(1)));
            return Ok(ExportStep {
                lines,
                due,
                done: true,
                missing: Some(format!(
                    "records {due} to {last} are missing (pruned while this export ran, or deleted)"
                )),
            });
        }
        if through.is_some_and(|t| r.seq > t) {
            return Ok(ExportStep {
                lines,
                due,
                done: true,
                missing: None,
            });
        }
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
        due = r.seq.saturating_add(1);
    }
    Ok(ExportStep {
        lines,
        due,
        done: through.is_some_and(|t| due > t),
        missing: None,
    })
}

/// Writes to standard output, so that a closed pipe or a full disk is an error, not a
/// panic.
fn write_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

pub(crate) fn parse_interval(text: &str) -> Result<Interval, String> {
    // From flags and environment files (a CRLF line end, a trailing blank): what is
    // around the interval is not part of it.
    Interval::parse(text.trim()).map_err(|e| e.to_string())
}

/// `audit verify` could not ask the server: not a verdict on the trail.
#[derive(Debug, thiserror::Error)]
#[error("could not verify the audit trail: {0}")]
pub(crate) struct VerifyUnavailable(String);

pub(crate) async fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify { since } => {
            // Exit 2, not 1: a script must not take "could not ask" for "tampered with".
            let c = client().map_err(|e| VerifyUnavailable(format!("{e:#}")))?;
            verify(&c, since.as_deref()).await
        }
        AuditCommand::Export { through } => {
            let c = client()?;
            let mut q = AuditQuery {
                limit: Some(1000),
                ..Default::default()
            };
            // The record due next: an archive with a hole (a prune that ran meanwhile)
            // is an error, not a quiet loss.
            let mut next: Option<u64> = None;
            loop {
                let page = c.list_audit(&q).await?;
                let due = *next.get_or_insert_with(|| {
                    if page.first_seq > 1 {
                        eprintln!(
                            "audit export: records 1 to {} were pruned before; the export begins at record {}",
                            page.first_seq - 1,
                            page.first_seq
                        );
                    }
                    page.first_seq
                });
                if let Some(t) = through.filter(|&t| t < due) {
                    bail!(
                        "records up to {t} were all pruned before this export: nothing to export"
                    );
                }
                let step = export_page(&page.records, due, through)?;
                write_out(&step.lines)?;
                if let Some(missing) = step.missing {
                    bail!("{missing}: the export is incomplete");
                }
                next = Some(step.due);
                if step.done || page.next_page_token.is_none() {
                    return Ok(());
                }
                q.page_token = page.next_page_token;
            }
        }
        AuditCommand::Prune { older_than } => {
            let c = client()?;
            let req = api::PruneAuditRequest { older_than };
            let (mut total, mut idle) = (0u64, 0);
            loop {
                let r = c.prune_audit(&req).await?;
                total += r.pruned;
                if !r.more {
                    outln!(
                        "pruned {total} audit records; the trail begins at record {}",
                        r.first_seq
                    );
                    return Ok(());
                }
                // `more` with nothing pruned: another prune ran meanwhile; a few of those
                // in a row are not this one's to wait out.
                idle = if r.pruned == 0 { idle + 1 } else { 0 };
                if idle >= 3 {
                    bail!(
                        "pruned {total} audit records; others are pruning the trail at the same time, so this stops (the trail begins at record {})",
                        r.first_seq
                    );
                }
            }
        }
        AuditCommand::Tail {
            lines,
            interval,
            principal,
            action,
            resource_prefix,
            include_audit_reads,
            max,
        } => {
            let c = client()?;
            if !interval.is_finite() || !(0.05..=3600.0).contains(&interval) {
                bail!("--interval: a number of seconds from 0.05 to 3600");
            }
            // Asking for audit:Read records shows them, whatever the default hides.
            let show_audit_reads = include_audit_reads || action.as_deref() == Some("audit:Read");
            let shown = |r: &api::AuditRecord| show_audit_reads || r.action != "audit:Read";
            let mut q = AuditQuery {
                principal,
                action,
                resource_prefix,
                limit: Some(1000),
                ..Default::default()
            };
            q.page_token = Some(tail_start(&c, &q, lines, &shown).await?.to_string());
            let pause = Duration::from_secs_f64(interval);
            let mut printed = 0u64;
            let mut retry = pause;
            loop {
                // Following survives a server restart or a dropped connection: the place
                // in the trail is kept, so nothing is missed or printed twice.
                let page = match c.list_audit(&q).await {
                    Ok(page) => page,
                    Err(e) if e.is_transient() => {
                        eprintln!(
                            "audit tail: {}; trying again in {} s",
                            printable(&e.to_string()),
                            retry.as_secs_f64()
                        );
                        tokio::time::sleep(strongbox_client::jittered(retry)).await;
                        retry = (retry * 2).min(Duration::from_secs(30)).max(pause);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                retry = pause;
                // Records pruned before they were read are not skipped silently.
                let at = q.page_token.as_deref().and_then(|t| t.parse::<u64>().ok());
                if let Some(at) = at.filter(|&at| at.saturating_add(1) < page.first_seq) {
                    eprintln!(
                        "audit tail: records {} to {} were pruned before they were read",
                        at.saturating_add(1),
                        page.first_seq - 1
                    );
                }
                for r in &page.records {
                    q.page_token = Some(r.seq.to_string());
                    if !shown(r) {
                        continue;
                    }
                    outln!("{}", serde_json::to_string(r)?);
                    printed += 1;
                    if max.is_some_and(|m| printed >= m) {
                        return Ok(());
                    }
                }
                if let Some(t) = page.next_page_token {
                    q.page_token = Some(t);
                    continue;
                }
                // Everything up to the count of that read has been seen.
                q.page_token = Some(page.count.to_string());
                use std::io::Write as _;
                std::io::stdout().flush()?;
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Where `audit tail` starts: the sequence number just before the last `lines` records
/// that match `q` and `shown`, found by reading back from the end in growing windows
/// (so a filter that matches rarely does not make it read the whole trail unless it
/// must).
async fn tail_start(
    c: &Client,
    q: &AuditQuery,
    lines: u64,
    shown: &impl Fn(&api::AuditRecord) -> bool,
) -> anyhow::Result<u64> {
    let first_page = c
        .list_audit(&AuditQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    let (count, first_seq) = (first_page.count, first_page.first_seq);
    if lines == 0 {
        return Ok(count);
    }
    let mut window = lines.max(1000);
    loop {
        let from = count.saturating_sub(window);
        let mut seqs = Vec::new();
        let mut page_q = q.clone();
        page_q.page_token = Some(from.to_string());
        'pages: loop {
            let page = c.list_audit(&page_q).await?;
            for r in &page.records {
                if r.seq > count {
                    break 'pages;
                }
                if shown(r) {
                    seqs.push(r.seq);
                }
            }
            match page.next_page_token {
                Some(t) => page_q.page_token = Some(t),
                None => break,
            }
        }
        let want = usize::try_from(lines).unwrap_or(usize::MAX);
        // (Records before first_seq were pruned: a wider window finds no more.)
        if seqs.len() >= want || from < first_seq {
            let first = seqs.len().saturating_sub(want);
            return Ok(seqs.get(first).map_or(count, |s| s.saturating_sub(1)));
        }
        window = window.saturating_mul(4);
    }
}

/// Free text as one line a terminal shows as it is: control characters (newlines, tabs,
/// escape sequences that move the cursor or erase lines) are written escaped, so that a
/// description cannot fake or hide lines of a listing.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ExportStep, api, export_page, parse_interval};

    /// Intervals from flags and environment files: blanks and a CRLF line end around
    /// them are not part of them (the API, where text is stored, refuses them).
    #[test]
    fn intervals_from_the_environment_are_trimmed() {
        assert_eq!(
            parse_interval(" 30d\r").map(|i| i.seconds()),
            Ok(30 * 86_400)
        );
        assert!(parse_interval("30 d").is_err());
    }

    fn records(seqs: &[u64]) -> Vec<api::AuditRecord> {
        seqs.iter()
            .map(|&seq| api::AuditRecord {
                seq,
                time: api::Timestamp::from_unix(0),
                request_id: String::new(),
                principal: "p".into(),
                action: String::new(),
                resource: String::new(),
                related_resources: Vec::new(),
                outcome: api::AuditOutcome::Succeeded,
                error_code: None,
                source: String::new(),
                user_agent: String::new(),
            })
            .collect()
    }

    fn seqs(step: &ExportStep) -> Vec<u64> {
        step.lines
            .lines()
            .map(|l| serde_json::from_str::<api::AuditRecord>(l).unwrap().seq)
            .collect()
    }

    #[test]
    fn an_export_page_writes_what_is_due_and_names_what_is_missing() {
        // Whole, then the next page from where it ended.
        let s = export_page(&records(&[4, 5, 6]), 4, None).unwrap();
        assert_eq!(
            (seqs(&s), s.due, s.done, s.missing),
            (vec![4, 5, 6], 7, false, None)
        );
        // Up to --through.
        let s = export_page(&records(&[4, 5, 6]), 4, Some(5)).unwrap();
        assert_eq!(
            (seqs(&s), s.due, s.done, s.missing),
            (vec![4, 5], 6, true, None)
        );
        let s = export_page(&records(&[4, 5]), 4, Some(5)).unwrap();
        assert!(s.done && s.missing.is_none());
        // A hole (a prune meanwhile): what came before is written, the hole named.
        let s = export_page(&records(&[4, 9]), 4, None).unwrap();
        assert_eq!(seqs(&s), vec![4]);
        assert_eq!(
            s.missing.as_deref(),
            Some("records 5 to 8 are missing (pruned while this export ran, or deleted)")
        );
        // A hole that begins within --through is named up to it, even when the next
        // record lies past it.
        let s = export_page(&records(&[9]), 4, Some(6)).unwrap();
        assert_eq!(
            s.missing.as_deref(),
            Some("records 4 to 6 are missing (pruned while this export ran, or deleted)")
        );
        // One past --through is not missing.
        let s = export_page(&records(&[9]), 7, Some(6)).unwrap();
        assert!(s.done && s.missing.is_none() && s.lines.is_empty());
    }

    #[test]
    fn listings_show_control_characters_escaped() {
        assert_eq!(
            super::printable("ok\x1b[1A\x1b[2K\nfake\ttoken\r ü"),
            "ok\\u{1b}[1A\\u{1b}[2K\\nfake\\ttoken\\r ü"
        );
    }
}
