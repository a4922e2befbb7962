//! Setting up, unsealing and running a server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use zeroize::Zeroizing;

use crate::api::{AppState, app};
use crate::barrier::{self, Barrier, RootKey};
use crate::clock::{Clock, SystemClock};
use crate::service::root_mutations;
use crate::service::{AuditEntry, AuditSlot, Service, ServiceConfig};
use crate::storage::{Backend, Mutation, Reader, RedbBackend, Store, Table};
use crate::tls;
use strongbox_schemas::ROOT_PRINCIPAL;

const DB_FILE: &str = "strongbox.redb";
const META_KEYCHECK: &[u8] = b"keycheck";
const META_ROOT_TOKEN: &[u8] = b"root_token_sha256";
pub(crate) const META_FORMAT: &[u8] = b"format_version";
/// Format 2: `init` writes the head of the empty audit trail (format 1 did not).
/// Format 3: the audit trail may be kept in packed runs (`storage::packed`), which a
/// release that reads only formats 1 and 2 would take for a deleted trail; a format 2
/// store becomes format 3 when this release unseals it.
const FORMAT_CURRENT: &[u8] = b"3";
/// Format 4: the audit trail was pruned (`meta/audit_base`), which a release that reads
/// only formats 1 to 3 would take for records deleted from the start; the prune's commit
/// writes it.
pub(crate) const FORMAT_PRUNED: &[u8] = b"4";

/// The database file inside a data dir.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// A fresh bearer token: `sbx_` and 256 random bits, base64url.
pub fn new_token() -> Zeroizing<String> {
    crate::service::new_token()
}

/// What to do with a database file an init made but did not finish.
const UNFINISHED_INIT: &str = "nothing was ever stored in it; remove the file strongbox.redb \
     (and strongbox.redb.journal, if any) from the data dir, and the root key file if that \
     init wrote one (its key opens nothing), and run strongbox init again";

fn is_inside(child: &Path, parent: &Path) -> bool {
    resolved(child).starts_with(resolved(parent))
}

/// `p` as an absolute path: what exists of it with its symbolic links followed (also a
/// link to what does not exist yet), the rest with `.` and `..` taken as written, so
/// that `a/../data/key` and a path through a link are both seen for where they lead.
fn resolved(p: &Path) -> PathBuf {
    resolved_within(p, 16)
}

/// [`resolved`], following at most `hops` links to what does not exist.
fn resolved_within(p: &Path, hops: u32) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => {
                out.push(other);
                if let Ok(real) = std::fs::canonicalize(&out) {
                    out = real;
                } else if hops > 0
                    && let Ok(target) = std::fs::read_link(&out)
                {
                    out.pop();
                    out = resolved_within(&out.join(target), hops - 1);
                }
            }
        }
    }
    out
}

/// Creates a database in `data_dir` and a root key; returns the root token (shown once).
/// The root key goes to `root_key_file` (mode 0600) when given, which must lie outside
/// the data dir.
pub fn init(
    data_dir: &Path,
    root_key_file: Option<&Path>,
    root_key: &RootKey,
) -> anyhow::Result<Zeroizing<String>> {
    init_announcing(data_dir, root_key_file, root_key, |_| Ok(()))
}

/// [`init`] that hands the root token to `announce` (which shows it) before the init
/// is final: when showing it fails (standard output closed, a full disk), the init is
/// undone, so that no database is left whose root token nobody saw.
pub fn init_announcing(
    data_dir: &Path,
    root_key_file: Option<&Path>,
    root_key: &RootKey,
    announce: impl FnOnce(&str) -> std::io::Result<()>,
) -> anyhow::Result<Zeroizing<String>> {
    if let Some(kf) = root_key_file
        && is_inside(kf, data_dir)
    {
        bail!(
            "the root key file must be kept apart from the data dir (it is inside {})",
            data_dir.display()
        );
    }
    // Refused before anything changes, the data dir's mode included.
    let db = db_path(data_dir);
    if holds_db(data_dir)? {
        // One an init made and was stopped before it finished (killed, power lost) holds
        // no root-key check: say how to start again, as opening it does.
        let unfinished = RedbBackend::open_unwritten(&db)
            .ok()
            .and_then(|b| b.get(Table::Meta, META_KEYCHECK).ok())
            .is_some_and(|check| check.is_none());
        if unfinished {
            bail!(
                "{} holds a database that an init did not finish: {UNFINISHED_INIT}",
                data_dir.display()
            );
        }
        bail!("{} already holds a Strongbox database", data_dir.display());
    }
    if let Some(kf) = root_key_file {
        // Any entry of that name, a symbolic link whose target is not there yet included
        // (`exists` follows links): the key is written under that name, and a link would
        // be found only after the root token had been shown.
        match std::fs::symlink_metadata(kf) {
            Ok(m) => bail!(
                "{} already exists{}; refusing to overwrite a root key",
                kf.display(),
                if m.file_type().is_symlink() {
                    " (a symbolic link)"
                } else {
                    ""
                }
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("looking at {}", kf.display())));
            }
        }
    }
    let mut made_dirs = make_private_dir(data_dir)?;
    let made = init_in(
        data_dir,
        root_key_file,
        root_key,
        announce,
        &db,
        &mut made_dirs,
    );
    if made.is_err() {
        // A failed init leaves no directory it made either (an empty data dir would
        // look like a place an init had run).
        remove_made_dirs(&made_dirs);
    }
    made
}

/// [`init_announcing`] once the data dir is there; `made_dirs` gets the key file's
/// directory if it makes it.
fn init_in(
    data_dir: &Path,
    root_key_file: Option<&Path>,
    root_key: &RootKey,
    announce: impl FnOnce(&str) -> std::io::Result<()>,
    db: &Path,
    made_dirs: &mut Vec<PathBuf>,
) -> anyhow::Result<Zeroizing<String>> {
    // The key goes to a new file beside its final name first (never over another
    // file), the database is made, and only then the key takes its name (a hard link,
    // or a rename that never replaces where the file system has no hard links: refused
    // if a file appeared there meanwhile) and the directory entry is synced.
    // A failed init leaves neither a stray key file nor a database without its key.
    let staged = match root_key_file {
        Some(kf) => {
            // A key directory that does not exist yet (`/etc/strongbox`) is made, private
            // as the data dir is; one that exists is left as it is.
            if let Some(dir) = kf.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.exists()
            {
                made_dirs.splice(0..0, make_private_dir(dir)?);
            }
            let mut name = kf.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".new-{}", hex::encode(rand::random::<[u8; 8]>())));
            let staged = kf.with_file_name(name);
            let text = Zeroizing::new(format!("{}\n", root_key.to_base64().as_str()));
            tls::write_private_new(&staged, text.as_bytes())?;
            Some((kf, staged))
        }
        None => None,
    };
    // Undoes this init: the staged key, and the database file (and its commit journal)
    // once this init made it.
    let journal = crate::storage::journal_path(db);
    let journal_was_there = journal.exists();
    let undo = |db_made: bool| {
        if let Some((_, staged)) = &staged {
            let _ = std::fs::remove_file(staged);
        }
        if db_made {
            let _ = std::fs::remove_file(db);
            if !journal_was_there {
                let _ = std::fs::remove_file(&journal);
            }
        }
    };
    // The database file is claimed first (created new, atomically), so that a failed
    // init below removes only a file it made, never one another init made meanwhile.
    if let Err(e) = claim_db_file(db) {
        undo(false);
        return Err(anyhow::Error::new(e).context(format!(
            "{} already holds a Strongbox database",
            data_dir.display()
        )));
    }
    // The root-key check is committed last, once the key file has its name: an init
    // killed before then leaves a store both init and the server call unfinished.
    let made = RedbBackend::open(db)
        .map_err(anyhow::Error::from)
        .and_then(|backend| {
            let (token, check) = initialize_unchecked(&backend, root_key)?;
            Ok((backend, token, check))
        });
    let (backend, token, check) = match made {
        Ok(made) => made,
        Err(e) => {
            undo(true);
            return Err(e);
        }
    };
    // The database's directory entry is made durable too: an init whose entries may
    // not survive a power loss is undone, not announced.
    if let Err(e) = crate::storage::sync_parent_dir(db) {
        undo(true);
        return Err(anyhow::Error::new(e).context(format!(
            "syncing the directory of {} failed; nothing was kept: run init again",
            db.display()
        )));
    }
    if let Err(e) = announce(token.as_str()) {
        undo(true);
        return Err(anyhow::Error::new(e)
            .context("showing the root token failed; nothing was kept: run init again"));
    }
    if let Some((kf, staged)) = &staged {
        // Naming fails when a file took the name meanwhile (or the file system can
        // neither link nor rename without replacing): this init is undone (the
        // database is this init's own), so that it can be run again, rather than leave
        // a database without its key.
        if let Err(e) = name_new_file(staged, kf) {
            undo(true);
            return Err(anyhow::Error::new(e).context(format!(
                "naming the root key file {} (nothing was kept; run init again)",
                kf.display()
            )));
        }
        if let Err(e) = crate::storage::sync_parent_dir(kf) {
            undo(true);
            let _ = std::fs::remove_file(kf);
            return Err(anyhow::Error::new(e).context(format!(
                "syncing the directory of the root key file {} failed; nothing was kept: run init again (the token shown is void)",
                kf.display()
            )));
        }
    }
    // Test-only: the process killed in the last instant before the check is written,
    // the key file named.
    #[cfg(feature = "failpoints")]
    if std::env::var_os("STRONGBOX_FAILPOINT_INIT_ABORT").is_some() {
        tracing::error!("failpoint: aborting the process");
        std::process::abort();
    }
    if let Err(e) = backend.commit(&[check]) {
        undo(true);
        if let Some((kf, _)) = &staged {
            let _ = std::fs::remove_file(kf);
        }
        return Err(anyhow::Error::new(e).context(
            "writing the root-key check failed; nothing was kept: run init again (the token shown is void)",
        ));
    }
    Ok(token)
}

/// Whether `data_dir` holds a database. A path that is there but is not a directory, or
/// that cannot be looked into (no permission), is an error saying so, not "no database":
/// init would otherwise go on to change it, and a server would ask for an init.
pub(crate) fn holds_db(data_dir: &Path) -> anyhow::Result<bool> {
    match std::fs::metadata(data_dir) {
        Ok(m) if !m.is_dir() => bail!("{} is not a directory", data_dir.display()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("looking at {}", data_dir.display())));
        }
    }
    db_path(data_dir)
        .try_exists()
        .with_context(|| format!("looking for a database in {}", data_dir.display()))
}

/// Makes the data dir, if needed, private to its owner (0700); returns the directories
/// it made, the deepest first, for a caller that fails to remove again.
pub(crate) fn make_private_dir(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt as _;
    // Made one level at a time from the top, so that only the directories this call
    // made are returned, never one another process made meanwhile. Each is an entry in
    // its parent, synced below, so that a power loss cannot take away a data dir (and all
    // an init or a restore wrote in it) on a file system that does not order a
    // directory's creation before its contents. On any failure, what it made goes.
    let missing: Vec<PathBuf> = data_dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    let mut made: Vec<PathBuf> = Vec::new();
    let done = (|| -> anyhow::Result<()> {
        for dir in missing.iter().rev() {
            match std::fs::create_dir(dir) {
                Ok(()) => made.insert(0, dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("creating {}", dir.display()))
                    );
                }
            }
        }
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", data_dir.display()))?;
        for dir in &made {
            crate::storage::sync_parent_dir(dir)
                .with_context(|| format!("syncing the directory that holds {}", dir.display()))?;
        }
        Ok(())
    })();
    match done {
        Ok(()) => Ok(made),
        Err(e) => {
            remove_made_dirs(&made);
            Err(e)
        }
    }
}

/// Removes directories a failed init or restore made, the deepest first: each only
/// if it is empty (`remove_dir`), so nothing another process put there meanwhile goes.
pub(crate) fn remove_made_dirs(made: &[PathBuf]) {
    for dir in made {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Gives the file `from` the name `to` (then `from` is gone), never over a file that
/// has that name (one that appeared meanwhile): a hard link, or where the file system
/// has none (vfat or exFAT on a removable disk, some network mounts), a rename that
/// refuses to replace. Refused with `AlreadyExists` when `to` is taken. The caller
/// syncs the directory.
pub fn name_new_file(from: &Path, to: &Path) -> std::io::Result<()> {
    name_new_file_with(from, to, |a, b| std::fs::hard_link(a, b))
}

fn name_new_file_with(
    from: &Path,
    to: &Path,
    link: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match link(from, to) {
        Ok(()) => {
            if let Err(e) = std::fs::remove_file(from) {
                tracing::warn!(file = %from.display(), error = %e, "could not remove a temporary name");
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(link_error) => rename_no_replace(from, to, link_error),
    }
}

/// `rename` that refuses to replace `to` (`RENAME_NOREPLACE`); `link_error` where the
/// file system (or the platform) cannot do that either.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rename_no_replace(from: &Path, to: &Path, link_error: std::io::Error) -> std::io::Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        from,
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| match e {
        // Neither is there: the link's error says more than the rename's.
        nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS => link_error,
        e => std::io::Error::from(e),
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rename_no_replace(_: &Path, _: &Path, link_error: std::io::Error) -> std::io::Result<()> {
    Err(link_error)
}

/// Creates the database file `db`, new (atomically: it fails when one is there) and
/// private (0600).
pub(crate) fn claim_db_file(db: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
}

/// Writes the records that make an empty store a Strongbox database: format version,
/// the root-key check, and the `root` principal (with `AdministratorAccess`) holding the
/// root token, stored as its SHA-256. Returns the root token.
pub fn initialize(backend: &dyn Backend, root_key: &RootKey) -> anyhow::Result<Zeroizing<String>> {
    let (token, check) = initialize_unchecked(backend, root_key)?;
    backend.commit(&[check])?;
    Ok(token)
}

/// [`initialize`] but for the root-key check, whose write is returned to be committed
/// last: until it is, the store is an init that did not finish, which the server and
/// init refuse saying how to start again.
fn initialize_unchecked(
    backend: &dyn Backend,
    root_key: &RootKey,
) -> anyhow::Result<(Zeroizing<String>, Mutation)> {
    if backend.get(Table::Meta, META_KEYCHECK)?.is_some() {
        bail!("this store is already initialised");
    }
    let barrier = Barrier::new(root_key);
    let token = new_token();
    let mut m = vec![Mutation::Put(
        Table::Meta,
        META_FORMAT.to_vec(),
        FORMAT_CURRENT.to_vec(),
    )];
    m.extend(root_mutations(
        barrier::sha256(token.as_bytes()),
        SystemClock.now(),
    ));
    m.push(crate::service::genesis_head(&barrier));
    backend.commit(&m)?;
    let check = Mutation::Put(
        Table::Meta,
        META_KEYCHECK.to_vec(),
        barrier.keycheck_record(),
    );
    Ok((token, check))
}

/// Databases written before principals existed kept the root token's hash in `meta`;
/// it becomes the token of the `root` principal.
fn upgrade_root_token(backend: &dyn Backend, now: i64) -> anyhow::Result<()> {
    if backend
        .get(Table::Principals, ROOT_PRINCIPAL.as_bytes())?
        .is_some()
    {
        return Ok(());
    }
    let hash: [u8; 32] = backend
        .get(Table::Meta, META_ROOT_TOKEN)?
        .and_then(|v| v.try_into().ok())
        .context("neither a root principal nor a root token record: the database is damaged")?;
    let mut m = root_mutations(hash, now);
    m.push(Mutation::Delete(Table::Meta, META_ROOT_TOKEN.to_vec()));
    backend.commit(&m)?;
    tracing::info!("upgraded the root token to the root principal");
    Ok(())
}

/// Format 1 stores were initialised without an audit head: one that never audited a
/// request gets the head of the empty trail now, and every such store becomes format 3,
/// from which on a missing head means a deleted trail. (Setting the format back to 1 and
/// deleting the trail is not detected, like replacing the store with an older copy.)
fn upgrade_audit_head(backend: &dyn Backend, barrier: &Barrier) -> anyhow::Result<()> {
    if backend.get(Table::Meta, META_FORMAT)?.as_deref() != Some(b"1".as_slice()) {
        return Ok(());
    }
    let mut m = vec![Mutation::Put(
        Table::Meta,
        META_FORMAT.to_vec(),
        FORMAT_CURRENT.to_vec(),
    )];
    let snapshot = backend.snapshot()?;
    m.extend(crate::service::genesis_head_if_never_used(
        &*snapshot, barrier,
    )?);
    // Only a trail that checks out is upgraded; one that does not is refused by the
    // caller with the store left as it is.
    if m.len() == 1 && crate::service::check_audit_head(&*snapshot, barrier).is_err() {
        return Ok(());
    }
    drop(snapshot);
    backend.commit(&m)?;
    tracing::info!("upgraded the data dir to format 3 (audit head written at init)");
    Ok(())
}

/// Reads the root key from a file or the `STRONGBOX_ROOT_KEY` text: one of them. A
/// file every user may read or write (any of the mode's "other" bits) is refused:
/// `strongbox init` makes it 0600; a group that shares it (0640 `root:strongbox`) is
/// the operator's choice.
pub fn load_root_key(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<RootKey> {
    match (file, env) {
        (Some(_), Some(_)) => {
            bail!("both --root-key-file and STRONGBOX_ROOT_KEY are set: give the root key one way")
        }
        (Some(f), None) => {
            use std::io::Read as _;
            use std::os::unix::fs::PermissionsExt as _;
            // One open: the mode checked is the mode of the file read.
            let mut file = std::fs::File::open(f)
                .with_context(|| format!("reading root key file {}", f.display()))?;
            let meta = file
                .metadata()
                .with_context(|| format!("reading root key file {}", f.display()))?;
            let mode = meta.permissions().mode();
            if mode & 0o007 != 0 {
                bail!(
                    "root key file {} has mode {:o}: every user may read it; make it 0600 (chmod 600)",
                    f.display(),
                    mode & 0o777
                );
            }
            // Room for the whole file at once: a buffer that grew would leave copies of
            // the key behind, unwiped. (A key file is some 45 bytes.)
            let room = usize::try_from(meta.len()).unwrap_or(0).min(64 * 1024) + 1;
            let mut text = Zeroizing::new(String::with_capacity(room));
            file.read_to_string(&mut text)
                .with_context(|| format!("reading root key file {}", f.display()))?;
            Ok(RootKey::from_base64(&text)?)
        }
        (None, Some(e)) => Ok(RootKey::from_base64(e)?),
        (None, None) => bail!("no root key: pass --root-key-file or set STRONGBOX_ROOT_KEY"),
    }
}

/// An unsealed server: the services over its store.
pub struct Unsealed {
    /// The services.
    pub service: Service,
}

/// The barrier of `root_key`, or an error when it is not the key `backend` was
/// initialised with.
fn check_root_key(backend: &dyn Backend, root_key: &RootKey) -> anyhow::Result<Barrier> {
    let keycheck = backend
        .get(Table::Meta, META_KEYCHECK)?
        .with_context(|| format!("this database was never initialised: {UNFINISHED_INIT}"))?;
    let barrier = Barrier::new(root_key);
    barrier
        .verify_keycheck(&keycheck)
        .context("refusing to unseal")?;
    Ok(barrier)
}

/// Unseals a backend with the root key. A wrong key is refused before anything is written.
pub fn unseal(
    backend: Arc<dyn Backend>,
    root_key: &RootKey,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
) -> anyhow::Result<Unsealed> {
    let barrier = vet(backend.as_ref(), root_key)?;
    upgrade_root_token(backend.as_ref(), clock.now())?;
    // Before any request could write the trail in runs.
    if backend.get(Table::Meta, META_FORMAT)?.as_deref() == Some(b"2".as_slice()) {
        backend.commit(&[Mutation::Put(
            Table::Meta,
            META_FORMAT.to_vec(),
            FORMAT_CURRENT.to_vec(),
        )])?;
        tracing::info!("upgraded the data dir to format 3 (audit trail in packed runs)");
    }
    let store = Store::new(backend);
    let service = Service::new(store, barrier, clock, config);
    Ok(Unsealed { service })
}

/// Refuses a store this release must not serve: a wrong root key, a format it does not
/// know, an audit trail altered while the server was down. Writes nothing to a store it
/// refuses; to one it accepts, only the format-1 upgrade of the audit head.
pub(crate) fn vet(backend: &dyn Backend, root_key: &RootKey) -> anyhow::Result<Barrier> {
    let barrier = check_root_key(backend, root_key)?;
    // Every store this server knows has a format it can read (init has always written
    // one); a newer release's store is not written to in this one's layout.
    match backend.get(Table::Meta, META_FORMAT)?.as_deref() {
        Some(b"1") | Some(b"2") | Some(b"3") | Some(b"4") => {}
        Some(other) => bail!(
            "refusing to unseal: the data dir has format {:?}, which this release does not know (it reads 1 to 4); run the release that wrote it",
            String::from_utf8_lossy(other)
        ),
        None => {
            bail!("refusing to unseal: the data dir has no format version: the database is damaged")
        }
    }
    // The audit trail is checked before anything is written: a store refused here is
    // left exactly as it was found (the upgrade below writes only to a store whose
    // trail it can vouch for).
    upgrade_audit_head(backend, &barrier)?;
    let snapshot = backend.snapshot()?;
    if let Err(problem) = crate::service::check_audit_head(&*snapshot, &barrier) {
        bail!(
            "refusing to unseal: {problem}. The audit trail was altered while the server was down; keep this data dir as evidence and restore from a backup"
        );
    }
    Ok(barrier)
}

/// Opens the database in `data_dir` and unseals it.
pub fn open(
    data_dir: &Path,
    root_key: &RootKey,
    config: ServiceConfig,
) -> anyhow::Result<Unsealed> {
    let db = db_path(data_dir);
    if !holds_db(data_dir)? {
        bail!(
            "no Strongbox database in {} (run strongbox init first)",
            data_dir.display()
        );
    }
    // Opening writes when the server stopped uncleanly (redb's repair, the journal's
    // replay): the store is vetted first as that open would leave it, opened in memory,
    // so that a store refused (a wrong key, a newer format, an altered audit trail) is
    // left exactly as it was found, journal and all.
    vet(&RedbBackend::open_unwritten(&db)?, root_key)?;
    let backend: Arc<dyn Backend> = Arc::new(RedbBackend::open(&db)?);
    unseal(backend, root_key, Arc::new(SystemClock), config)
}

/// The name the audit trail gives whoever replaced the root token with the root key
/// (no token is involved). Parentheses are not allowed in principal names, so no
/// principal, in any store, can be taken for it.
pub const ROOT_KEY_HOLDER: &str = "(root-key)";

/// Replaces the root token: the old one stops working. Used by the dev server (a fresh
/// token each start) and by `strongbox reset-root-token` (a lost token, with the root
/// key). The change is recorded in the audit trail, in the same commit, as done by
/// [`ROOT_KEY_HOLDER`] through `how`.
pub async fn reset_root_token(u: &mut Unsealed, how: &str) -> anyhow::Result<Zeroizing<String>> {
    let service = u.service.clone();
    let entry = by_root_key_holder(
        &service,
        "ram:ResetRootToken",
        &format!("principal/{ROOT_PRINCIPAL}"),
        how,
    );
    let reset = service.reset_root_token();
    Ok(service.audited(AuditSlot::new(entry), reset).await?)
}

/// The audit entry of `action` on `resource`, done locally by [`ROOT_KEY_HOLDER`]
/// through the command `how`.
fn by_root_key_holder(service: &Service, action: &str, resource: &str, how: &str) -> AuditEntry {
    AuditEntry {
        time: service.now(),
        request_id: format!("{:032x}", rand::random::<u128>()),
        principal: ROOT_KEY_HOLDER.into(),
        action: action.into(),
        resource: resource.into(),
        related: Vec::new(),
        source: "local".into(),
        user_agent: how.into(),
    }
}

/// Records in the audit trail that this data dir was restored from a backup, as done by
/// [`ROOT_KEY_HOLDER`] with `strongbox restore` (action `sys:Restore`): the trail then
/// says when the database it holds came back.
pub async fn record_restore(u: &Unsealed) -> anyhow::Result<()> {
    let service = &u.service;
    let slot = AuditSlot::new(by_root_key_holder(
        service,
        "sys:Restore",
        "*",
        "strongbox restore",
    ));
    service
        .finish_audit(&slot, strongbox_schemas::AuditOutcome::Succeeded, None)
        .await?;
    Ok(())
}

/// Revokes every principal's token and replaces the root token, recorded in the audit
/// trail (in the same commit) as done by [`ROOT_KEY_HOLDER`] through `how` (action
/// `ram:DeleteToken`, resource `principal/*`). Returns how many tokens were revoked and
/// the new root token.
pub async fn revoke_all_tokens(
    u: &Unsealed,
    how: &str,
) -> anyhow::Result<(usize, Zeroizing<String>)> {
    let service = u.service.clone();
    let entry = by_root_key_holder(&service, "ram:DeleteToken", "principal/*", how);
    let revoke = service.revoke_all_tokens();
    Ok(service.audited(AuditSlot::new(entry), revoke).await?)
}

/// How to serve.
pub struct ServeOptions {
    /// Listen address (port 0 picks one).
    pub listen: SocketAddr,
    /// TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// Seconds between background ticks.
    pub tick_interval: Duration,
    /// Connection limits and timeouts.
    pub limits: tls::ConnectionLimits,
}

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Stops the server when sent.
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// Finishes when the server has stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds, starts the background ticker, and serves in a task.
pub async fn start(u: Unsealed, opts: ServeOptions) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState::with_limits(u.service.clone(), &opts.limits);
    let service = u.service.clone();
    let store = u.service.store().clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(opts.tick_interval);
        loop {
            every.tick().await;
            match service.tick_in_background().await {
                Ok(r) if r != Default::default() => tracing::info!(?r, "background tick"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "background tick failed"),
            }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tls::serve(listener, opts.tls, app(state), opts.limits, async {
            let _ = stopped.await;
        })
        .await;
        ticker.abort();
        // What the journal holds goes into the database, so the next start replays
        // nothing (a crash instead is what the journal is for); writes still asked for
        // (a request past the grace period, a rotation under way) are refused.
        if let Err(e) = store.close().await {
            tracing::warn!(error = %e, "could not checkpoint the database at shutdown");
        }
    });
    Ok(Running { addr, stop, task })
}

/// Reads the data dir's format version (exposed for tests of on-disk compatibility).
pub fn format_version(store: &Store) -> anyhow::Result<Option<String>> {
    Ok(store
        .get(Table::Meta, META_FORMAT)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    /// A file gets its new name by a hard link, or by a rename where linking fails (a
    /// file system without hard links); neither ever replaces a file that has the name.
    #[test]
    fn a_new_name_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        let no_links =
            |_: &Path, _: &Path| Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        for linked in [true, false] {
            std::fs::write(&from, b"new").unwrap();
            let _ = std::fs::remove_file(&to);
            if linked {
                name_new_file(&from, &to).unwrap();
            } else {
                name_new_file_with(&from, &to, no_links).unwrap();
            }
            assert_eq!(std::fs::read(&to).unwrap(), b"new");
            assert!(!from.exists(), "the temporary name is gone");
            // Taken: refused both ways, and both files stay as they were.
            std::fs::write(&from, b"newer").unwrap();
            let refused = if linked {
                name_new_file(&from, &to)
            } else {
                name_new_file_with(&from, &to, no_links)
            };
            assert_eq!(
                refused.unwrap_err().kind(),
                std::io::ErrorKind::AlreadyExists
            );
            assert_eq!(std::fs::read(&to).unwrap(), b"new");
            assert_eq!(std::fs::read(&from).unwrap(), b"newer");
            std::fs::remove_file(&from).unwrap();
        }
        crate::storage::sync_parent_dir(&to).unwrap();
    }
}
