//! Giving up root, as strongSwan's charon does: the daemons start as root,
//! do the little that needs more (read their credentials, turn on
//! forwarding, hand their state directory to their user), and then keep
//! only the capabilities they use for the rest of their life: CAP_NET_ADMIN
//! (netlink, XFRM, nftables, TUN, WireGuard) and CAP_NET_BIND_SERVICE (UDP
//! port 500, bound once the async runtime runs), optionally as an
//! unprivileged user (`[process] user`).
//!
//! Capabilities belong to threads, not processes, so the drop must happen
//! while the process has one thread: before the async runtime, sled, or
//! the data plane start theirs; `drop_privileges` refuses otherwise. The
//! bounding set shrinks too, and the kept capabilities are made ambient,
//! so that what the daemons start later (wireguard-go, as the same user;
//! nft) gets these two and nothing more.

use std::ffi::CString;
use std::os::unix::fs::lchown;
use std::path::Path;

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};
use nix::unistd::{Gid, Uid, User};
use serde::Deserialize;

/// `[process]`: who the daemon runs as once started.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// A user to become after start-up (e.g. "sixgate"); its primary group
    /// becomes the group. Unset: root, with capabilities dropped.
    pub user: Option<String>,
}

/// Whom to become: a user resolved from the password database.
#[derive(Debug, Clone)]
pub struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
}

impl RunAs {
    /// Looks `name` up in the password database.
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        let user = User::from_name(name)
            .map_err(|e| format!("looking up user {name}: {e}"))?
            .ok_or_else(|| format!("no user {name} on this system"))?;
        Ok(RunAs {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
        })
    }

    /// Makes `path` and everything below it (not following symlinks) the
    /// user's, so that it can go on writing there; what is under `keep`
    /// stays root's (the broker's CA key, which the daemon never needs).
    pub fn own_tree(&self, path: &Path, keep: &[&Path]) -> Result<(), String> {
        if keep.contains(&path) {
            return Ok(());
        }
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        lchown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
            .map_err(|e| format!("handing {} to {}: {e}", path.display(), self.name))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
                let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
                self.own_tree(&entry.path(), keep)?;
            }
        }
        Ok(())
    }
}

impl RunAs {
    /// Lets the user create files in `dir`, a directory root uses too
    /// (wireguard-go's socket directory): created if missing, its group
    /// made the user's and given write access. Root keeps it; handing it
    /// to the user would lock out root processes without CAP_DAC_OVERRIDE.
    pub fn share_dir(&self, dir: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let failed = |e: std::io::Error| format!("{}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(failed)?;
        let meta = std::fs::symlink_metadata(dir).map_err(failed)?;
        if !meta.is_dir() {
            return Err(format!("{}: not a directory", dir.display()));
        }
        lchown(dir, None, Some(self.gid.as_raw())).map_err(failed)?;
        let mode = meta.permissions().mode() | 0o070;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(failed)
    }
}

/// The capabilities every daemon keeps after start-up.
pub const KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_BIND_SERVICE];

/// Drops every capability but `keep` from all sets of this (single-threaded)
/// process, and becomes `run_as` if given. Does nothing for a process that
/// is not root (an unprivileged test, say): it has nothing to give up.
pub fn drop_privileges(run_as: Option<&RunAs>, keep: &[Capability]) -> Result<(), String> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|e| format!("/proc/self/task: {e}"))?
        .count();
    if threads != 1 {
        return Err(format!(
            "dropping privileges with {threads} threads running: capabilities are per \
             thread, the others would keep theirs"
        ));
    }
    // What we have of what we keep: a daemon started without one (by
    // setpriv, a container) goes on without it and fails where it needs
    // it, with the error that explains.
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(|e| format!("reading capabilities: {e}"))?;
    let kept: CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    fn failed(what: &'static str) -> impl Fn(caps::errors::CapsError) -> String {
        move |e| format!("{what}: {e}")
    }
    // The bounding set first: shrinking it needs CAP_SETPCAP, given up
    // below. It is what a root child (or a setuid program) could regain.
    // Without CAP_SETPCAP (a container may withhold it) the bounding set
    // cannot shrink and stays what the container gave.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all().difference(&kept) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(failed("the bounding set"))?;
        }
    }
    if let Some(user) = run_as {
        // Keep the permitted set across the change of user; the effective
        // one is cleared by it and set again below.
        caps::securebits::set_keepcaps(true).map_err(failed("keeping capabilities"))?;
        let name = CString::new(user.name.as_str()).map_err(|e| e.to_string())?;
        nix::unistd::initgroups(&name, user.gid)
            .map_err(|e| format!("supplementary groups of {}: {e}", user.name))?;
        nix::unistd::setresgid(user.gid, user.gid, user.gid)
            .map_err(|e| format!("becoming group {}: {e}", user.gid))?;
        nix::unistd::setresuid(user.uid, user.uid, user.uid)
            .map_err(|e| format!("becoming user {}: {e}", user.name))?;
        caps::securebits::set_keepcaps(false).map_err(failed("keeping capabilities"))?;
    }
    // The effective set must stay within the permitted one at each step.
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        caps::set(None, set, &kept).map_err(failed("the capability sets"))?;
    }
    // Ambient, so that wireguard-go, run as this user, can create its TUN
    // device; a root child gets the same from the bounding set.
    for cap in &kept {
        caps::raise(None, CapSet::Ambient, *cap).map_err(failed("the ambient set"))?;
    }
    // No exec may gain more than this (a setuid binary, file capabilities).
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    Ok(())
}
