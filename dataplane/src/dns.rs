//! The client's resolver settings: the DNS servers the broker hands out
//! go to systemd-resolved where it runs, as the tunnel device's own
//! servers with `~.` as its routing domain (so every name is asked there,
//! but those of a more specific domain another link claims, and
//! /etc/resolv.conf, resolved's stub, stays as it is); otherwise into
//! `/etc/resolv.conf`, and the file as it was comes back, byte for byte,
//! when the tunnel goes down, and at the next start after a crash.
//!
//! The original is saved beside the daemon's control socket before the
//! first change, and only then: a second `apply` while the tunnel's
//! servers are in place keeps the first saved copy. resolved needs no
//! saving: its settings for the device are reverted on `down` and go with
//! the device when a killed daemon's device disappears.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the client's DNS servers go.
#[derive(Debug, Clone)]
pub enum Resolver {
    /// systemd-resolved, on the tunnel device.
    Resolved(Resolved),
    /// /etc/resolv.conf.
    File(ResolvConf),
}

impl Resolver {
    /// systemd-resolved for `link` if it runs, otherwise `file`.
    pub fn of_system(link: &str, file: ResolvConf) -> Resolver {
        if Resolved::running() {
            Resolver::Resolved(Resolved::new(link))
        } else {
            Resolver::File(file)
        }
    }

    /// Puts `servers` in place.
    pub fn apply(&self, servers: &[IpAddr]) -> io::Result<()> {
        match self {
            Resolver::Resolved(r) => r.apply(servers),
            Resolver::File(f) => f.apply(servers),
        }
    }

    /// Takes them away again.
    pub fn restore(&self) -> io::Result<()> {
        match self {
            Resolver::Resolved(r) => r.revert(),
            Resolver::File(f) => f.restore().map(drop),
        }
    }

    /// What it writes to, for the log.
    pub fn describe(&self) -> String {
        match self {
            Resolver::Resolved(r) => format!("systemd-resolved, on {}", r.link),
            Resolver::File(f) => f.target.display().to_string(),
        }
    }
}

/// systemd-resolved's settings for one link, made with `resolvectl` (which
/// asks resolved over D-Bus; resolved lets a caller with CAP_NET_ADMIN,
/// which the client keeps, change a link's settings).
#[derive(Debug, Clone)]
pub struct Resolved {
    link: String,
}

/// The socket resolved listens on while it runs (systemd 246 and later).
const RESOLVED_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";

impl Resolved {
    /// The settings of `link`.
    pub fn new(link: &str) -> Resolved {
        Resolved {
            link: link.to_owned(),
        }
    }

    /// Whether systemd-resolved runs on this machine.
    pub fn running() -> bool {
        Path::new(RESOLVED_SOCKET).exists()
    }

    /// Makes `servers` the link's DNS servers and the link the one every
    /// name goes to.
    pub fn apply(&self, servers: &[IpAddr]) -> io::Result<()> {
        let servers: Vec<String> = servers.iter().map(IpAddr::to_string).collect();
        let mut dns = vec!["dns", &self.link];
        dns.extend(servers.iter().map(String::as_str));
        resolvectl(&dns)?;
        resolvectl(&["domain", &self.link, "~."])?;
        resolvectl(&["default-route", &self.link, "yes"])
    }

    /// Drops what [`Resolved::apply`] set; a link that is gone already
    /// took its settings with it.
    pub fn revert(&self) -> io::Result<()> {
        if !Path::new("/sys/class/net").join(&self.link).exists() {
            return Ok(());
        }
        resolvectl(&["revert", &self.link])
    }
}

fn resolvectl(args: &[&str]) -> io::Result<()> {
    let out = Command::new("resolvectl")
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running resolvectl: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "resolvectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// resolv.conf and where its original is kept while ours is in place.
#[derive(Debug, Clone)]
pub struct ResolvConf {
    target: PathBuf,
    saved: PathBuf,
}

impl ResolvConf {
    /// Manages `target` (normally /etc/resolv.conf), keeping the original
    /// at `saved`.
    pub fn new(target: impl Into<PathBuf>, saved: impl Into<PathBuf>) -> ResolvConf {
        ResolvConf {
            target: target.into(),
            saved: saved.into(),
        }
    }

    /// Where the original is kept.
    pub fn saved_path(&self) -> &Path {
        &self.saved
    }

    /// Puts `servers` in place, saving the original first.
    pub fn apply(&self, servers: &[IpAddr]) -> io::Result<()> {
        if !self.saved.exists() {
            // A missing resolv.conf is saved as "missing" (an empty file
            // would be restored as an empty resolv.conf), and a symlink (a
            // resolver's stub file) as its target, to be linked again.
            let original = match fs::read_link(&self.target) {
                Ok(link) => [SYMLINK, link.as_os_str().as_encoded_bytes()].concat(),
                Err(_) => match fs::read(&self.target) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => MISSING.to_vec(),
                    Err(e) => return Err(e),
                },
            };
            write_atomically(&self.saved, &original)?;
        }
        let text: String = servers
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        let text = format!("# written by sixgate-client; restored on `down`\n{text}");
        write_atomically(&self.target, text.as_bytes())
    }

    /// Puts the original back, if one is saved; returns whether it did.
    pub fn restore(&self) -> io::Result<bool> {
        let bytes = match fs::read(&self.saved) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if bytes == MISSING || bytes.starts_with(SYMLINK) {
            match fs::remove_file(&self.target) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            if let Some(link) = bytes.strip_prefix(SYMLINK) {
                let link = std::ffi::OsStr::from_bytes(link);
                std::os::unix::fs::symlink(link, &self.target)?;
            }
        } else {
            write_atomically(&self.target, &bytes)?;
        }
        fs::remove_file(&self.saved)?;
        Ok(true)
    }
}

const MISSING: &[u8] = b"\0sixgate: there was no resolv.conf\0";
const SYMLINK: &[u8] = b"\0sixgate: a symlink to\0";

/// Replaces `path` with `bytes` by a rename, so a reader never sees half a
/// file, keeping the mode of what was there (resolv.conf is world-readable).
/// Where only the file itself is writable (bind-mounted over, as by `ip
/// netns exec` and containers, or the one writable path of a systemd unit
/// with ProtectSystem=strict) it is rewritten in place instead.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.sixgate-new"));
    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644);
    let renamed = fs::write(&tmp, bytes)
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(&tmp, path));
    match renamed {
        Err(e) if in_place_only(&e) && path.exists() => {
            let _ = fs::remove_file(&tmp);
            fs::write(path, bytes)
        }
        other => other,
    }
}

/// Whether an error says the directory cannot change but the file may.
fn in_place_only(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBUSY | libc::EROFS | libc::EACCES | libc::EPERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_comes_back_byte_for_byte() {
        let dir = crate::scratch_dir("dns");
        let target = dir.join("resolv.conf");
        let original = b"# from DHCP\nnameserver 192.0.2.53\noptions edns0 \n".to_vec();
        fs::write(&target, &original).unwrap();
        let rc = ResolvConf::new(&target, dir.join("saved"));
        rc.apply(&["2001:db8::53".parse().unwrap()]).unwrap();
        assert!(fs::read_to_string(&target)
            .unwrap()
            .contains("nameserver 2001:db8::53"));
        // A second apply (a reconnect) keeps the first saved copy.
        rc.apply(&["2001:db8::54".parse().unwrap()]).unwrap();
        assert!(rc.restore().unwrap());
        assert_eq!(fs::read(&target).unwrap(), original);
        assert!(!rc.saved_path().exists());
        assert!(!rc.restore().unwrap(), "nothing to restore twice");
        // No resolv.conf at all before: none after.
        fs::remove_file(&target).unwrap();
        rc.apply(&["2001:db8::53".parse().unwrap()]).unwrap();
        rc.restore().unwrap();
        assert!(!target.exists());
        // A resolver's stub symlink is linked again, not copied.
        std::os::unix::fs::symlink("stub-resolv.conf", &target).unwrap();
        rc.apply(&["2001:db8::53".parse().unwrap()]).unwrap();
        assert!(!fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
        rc.restore().unwrap();
        assert_eq!(
            fs::read_link(&target).unwrap(),
            Path::new("stub-resolv.conf")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
