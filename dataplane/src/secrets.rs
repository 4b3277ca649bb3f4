//! Secrets on disk: what the daemons and the CLI write is readable by its
//! owner only. The daemons run with umask 077; the state directory is
//! 0700 and everything in it 0600 (sled's files hold leases, the broker's
//! WireGuard private key, generated site keys and preshared keys); files
//! written for the operator are created new, 0600, in the target directory,
//! and renamed into place, so a symlink planted at the target name is
//! replaced rather than written through.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Sets the process umask to 077: everything created from now on is
/// private to its owner.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and its parents) if needed, then makes it 0700 and
/// everything below it 0700 (directories) or 0600 (files). Symlinks are
/// neither followed nor changed.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    restrict_tree(dir)
}

fn restrict_tree(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, Permissions::from_mode(mode))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            restrict_tree(&entry?.path())?;
        }
    }
    Ok(())
}

/// Writes `contents` to `dir/name` with mode 0600: into a new temporary
/// file beside it (never an existing file, never through a symlink),
/// synced, then renamed over `name`.
pub fn write_private_file(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    let target = dir.join(name);
    let mut suffix = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
    let tmp = dir.join(format!(
        ".{name}.{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Opens `path` for appending a log, creating it 0600; refuses a symlink.
pub fn open_private_log(path: &Path) -> io::Result<fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_written_through() {
        let dir = crate::scratch_dir("secrets");
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        symlink(&victim, dir.join("wg.conf")).unwrap();
        write_private_file(&dir, "wg.conf", b"PrivateKey = secret\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            fs::read_to_string(dir.join("wg.conf")).unwrap(),
            "PrivateKey = secret\n"
        );
        assert!(!fs::symlink_metadata(dir.join("wg.conf"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(mode(&dir.join("wg.conf")), 0o600);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            2,
            "no temporary file left"
        );
        assert!(write_private_file(&dir, "../x", b"").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_state_directory_becomes_private() {
        let dir = crate::scratch_dir("state");
        fs::create_dir_all(dir.join("leases/blobs")).unwrap();
        fs::write(dir.join("leases/db"), "x").unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("leases/db"), Permissions::from_mode(0o644)).unwrap();
        symlink("/etc/hostname", dir.join("link")).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("leases")), 0o700);
        assert_eq!(mode(&dir.join("leases/blobs")), 0o700);
        assert_eq!(mode(&dir.join("leases/db")), 0o600);
        assert_ne!(
            mode(Path::new("/etc/hostname")),
            0o600,
            "symlinks not followed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
