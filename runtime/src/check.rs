//! What a daemon checks of its configuration beyond what parsing finds:
//! that its key and certificate belong together, that the certificate
//! certifies the configured identity, is valid (and for how long), and is
//! fit for the daemon's role as its peers will check it; that the CA
//! certificates load and are in date; that the ports are free. Each
//! [`Finding`] names the configuration key it is about. `check` prints them
//! all and exits non-zero on an error; a start makes the same findings
//! ([`Findings::conclude`]), refuses on an error and logs the warnings, so
//! the two never disagree.

use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use sixgate_proto::cert::{self, Purpose, TrustAnchors};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::Identification;

use crate::pki::{self, Credentials};

/// A certificate closer than this to its expiry is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The daemon refuses to start.
    Error,
    /// The daemon starts, and says so in its log.
    Warning,
}

/// One problem, tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The configuration key, as written in the file (`ike.certificate`).
    pub key: String,
    /// What is wrong, in words, and what it breaks.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.key, self.message)
    }
}

/// The findings about one configuration file.
#[derive(Debug, Default)]
pub struct Findings {
    items: Vec<Finding>,
}

impl Findings {
    /// A problem that stops the daemon.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        self.push(Severity::Error, key, message.into());
    }

    /// A problem the daemon starts with.
    pub fn warning(&mut self, key: &str, message: impl Into<String>) {
        self.push(Severity::Warning, key, message.into());
    }

    fn push(&mut self, severity: Severity, key: &str, message: String) {
        self.items.push(Finding {
            severity,
            key: key.to_string(),
            message,
        });
    }

    /// Every finding, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Finding> {
        self.items.iter()
    }

    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|f| f.severity == Severity::Error)
    }

    /// For a start: logs the warnings and fails with all the errors, each
    /// on its own line after the file's name.
    pub fn conclude(self, file: &Path) -> Result<(), String> {
        let mut errors = Vec::new();
        for finding in self.items {
            match finding.severity {
                Severity::Warning => {
                    tracing::warn!("{}: {}: {}", file.display(), finding.key, finding.message)
                }
                Severity::Error => errors.push(format!("{}: {}", finding.key, finding.message)),
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(format!("{}: {}", file.display(), errors[0])),
            _ => Err(format!("{}:\n  {}", file.display(), errors.join("\n  "))),
        }
    }

    /// For `check`: prints every finding, then a summary line, which is
    /// the error when any finding is one.
    pub fn report(&self, file: &Path) -> Result<(), String> {
        for finding in &self.items {
            println!("{}: {finding}", file.display());
        }
        let errors = self
            .items
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let warnings = self.items.len() - errors;
        if errors == 0 {
            println!("{}: ok ({warnings} warnings)", file.display());
            Ok(())
        } else {
            Err(format!(
                "{}: {errors} errors, {warnings} warnings",
                file.display()
            ))
        }
    }
}

/// Where a daemon's credentials are configured: the file paths, and the
/// names of their keys (the broker's sit in `[ike]`, the client's at the
/// top).
pub struct CredentialFiles<'a> {
    /// The keys' section with its dot (`"ike."`), or `""`.
    pub section: &'a str,
    /// The identity as written.
    pub identity: &'a str,
    /// The certificate chain file, leaf first.
    pub certificate: &'a Path,
    /// The leaf's private key.
    pub private_key: &'a Path,
    /// The trust anchors for the peer.
    pub ca: &'a [PathBuf],
    /// What our own certificate must be good for, as the peer checks it:
    /// [`Purpose::Server`] for the broker.
    pub role: Purpose,
    /// Who refuses us when the certificate does not fit, for the messages.
    pub peers: &'a str,
}

/// Reads and checks the credentials; returns them only if nothing about
/// them is an error. `now` is seconds since the Unix epoch.
pub fn credentials(
    findings: &mut Findings,
    files: &CredentialFiles<'_>,
    now: i64,
) -> Option<Credentials> {
    let key = |name: &str| format!("{}{name}", files.section);
    let errors_before = findings.items.len();
    let chain = pki::load_chain(files.certificate)
        .map_err(|e| findings.error(&key("certificate"), e))
        .ok();
    let private_key = pki::load_key(files.private_key)
        .map_err(|e| findings.error(&key("private_key"), e))
        .ok();
    let identity = chain
        .as_ref()
        .and_then(|chain| own_identity(findings, &key("identity"), files, chain));
    if let (Some(chain), Some(private_key)) = (&chain, &private_key) {
        if let Err(e) = pki::check_key_matches(chain, private_key) {
            findings.error(
                &key("private_key"),
                format!(
                    "{}: {e} {}",
                    files.private_key.display(),
                    files.certificate.display()
                ),
            );
        }
    }
    if let Some(chain) = &chain {
        for der in chain {
            dates(findings, &key("certificate"), files.certificate, der, now);
        }
        if let Some(leaf) = chain.first() {
            usage(findings, &key("certificate"), files, leaf);
        }
    }
    let anchors = anchors(findings, &key("ca"), files.ca, now);
    let clean = !findings.items[errors_before..]
        .iter()
        .any(|f| f.severity == Severity::Error);
    match (clean, identity, chain, private_key, anchors) {
        (true, Some(identity), Some(chain), Some(key), Some(anchors)) => Some(Credentials {
            identity,
            chain,
            key,
            anchors,
        }),
        _ => None,
    }
}

/// The trust anchors, each file read once and each certificate's dates
/// checked against the file it came from.
fn anchors(
    findings: &mut Findings,
    key: &str,
    paths: &[PathBuf],
    now: i64,
) -> Option<TrustAnchors> {
    let mut cas = Vec::new();
    for path in paths {
        match pki::load_chain(path) {
            Ok(certs) => {
                for der in &certs {
                    dates(findings, key, path, der, now);
                }
                cas.extend(certs);
            }
            Err(e) => {
                findings.error(key, e);
                return None;
            }
        }
    }
    pki::trust_anchors(cas)
        .map_err(|e| findings.error(key, e))
        .ok()
}

/// Our identity, checked against the certificate: a peer compares the
/// two and fails the exchange with AUTHENTICATION_FAILED, logging
/// nothing we could read, so this is found here.
fn own_identity(
    findings: &mut Findings,
    key: &str,
    files: &CredentialFiles<'_>,
    chain: &[Vec<u8>],
) -> Option<Identification> {
    let id = match pki::own_identity(files.identity, chain) {
        Ok(id) => id,
        Err(e) => {
            findings.error(key, e);
            return None;
        }
    };
    let leaf = chain.first()?;
    if cert::match_identity(leaf, &id).is_ok() {
        return Some(id);
    }
    let names = cert::certified_names(leaf)
        .map(|n| n.join(", "))
        .unwrap_or_else(|e| e.to_string());
    let canonical = CanonicalIdentity::from_wire(&id)
        .map_or_else(|_| files.identity.to_string(), |c| c.to_string());
    findings.error(
        key,
        format!(
            "{} does not certify {canonical} (it names {names}): {} would fail every \
             connection with AUTHENTICATION_FAILED",
            files.certificate.display(),
            files.peers
        ),
    );
    None
}

/// A certificate's dates: an error outside them, a warning close to the end.
fn dates(findings: &mut Findings, key: &str, file: &Path, der: &[u8], now: i64) {
    let Ok((not_before, not_after)) = cert::validity_period(der) else {
        findings.error(
            key,
            format!("{}: a certificate does not parse", file.display()),
        );
        return;
    };
    let subject = cert::certified_names(der)
        .ok()
        .and_then(|n| n.last().cloned())
        .unwrap_or_default();
    let day = 86400;
    if now < not_before {
        findings.error(
            key,
            format!(
                "{} ({subject}) is not valid until {} (check the clock)",
                file.display(),
                crate::clock::utc_text(not_before)
            ),
        );
    } else if now > not_after {
        findings.error(
            key,
            format!(
                "{} ({subject}) expired on {}",
                file.display(),
                crate::clock::utc_text(not_after)
            ),
        );
    } else if not_after - now < EXPIRY_WARNING_DAYS * day {
        findings.warning(
            key,
            format!(
                "{} ({subject}) expires in {} days, on {}",
                file.display(),
                (not_after - now) / day,
                crate::clock::utc_text(not_after)
            ),
        );
    }
}

/// The leaf's key usages as the peers check them; for a broker also what
/// the stock clients of Windows, iOS and macOS demand beyond that.
fn usage(findings: &mut Findings, key: &str, files: &CredentialFiles<'_>, leaf: &[u8]) {
    if let Err(e) = cert::check_usage(leaf, files.role) {
        findings.error(
            key,
            format!(
                "{}: {e}: {} refuse it",
                files.certificate.display(),
                files.peers
            ),
        );
        return;
    }
    if files.role == Purpose::Server {
        if let Some(w) = pki::stock_client_eku_warning(leaf) {
            findings.warning(key, format!("{}: {w}", files.certificate.display()));
        }
    }
}

/// Checks that each UDP port is free on its address (and the address one
/// of this host's), as a start would find by failing to bind it.
pub fn udp_ports_free(findings: &mut Findings, key: &str, addresses: &[SocketAddr]) {
    for addr in addresses {
        if let Err(e) = UdpSocket::bind(addr) {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => "is in use (by a running daemon?)".to_string(),
                std::io::ErrorKind::AddrNotAvailable => {
                    "is not an address of this host".to_string()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "needs root (or CAP_NET_BIND_SERVICE) to bind".to_string()
                }
                _ => e.to_string(),
            };
            findings.error(key, format!("UDP {addr} {why}"));
        }
    }
}

/// Checks that a network interface exists.
pub fn interface_exists(findings: &mut Findings, key: &str, name: &str) {
    if nix::net::if_::if_nametoindex(name).is_err() {
        findings.error(key, format!("there is no interface {name:?} on this host"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_fails_with_every_error_and_only_errors() {
        let mut f = Findings::default();
        f.warning("ike.certificate", "expires in 3 days");
        assert!(!f.has_errors());
        f.error("pool.prefix", "link-local");
        f.error("ike.identity", "not certified");
        let e = f.conclude(Path::new("/etc/b.toml")).unwrap_err();
        assert_eq!(
            e,
            "/etc/b.toml:\n  pool.prefix: link-local\n  ike.identity: not certified"
        );
        let mut one = Findings::default();
        one.error("ca", "missing");
        assert_eq!(
            one.conclude(Path::new("c.toml")).unwrap_err(),
            "c.toml: ca: missing"
        );
    }
}
