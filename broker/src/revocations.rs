//! The operator's revocation list, kept in sled beside the leases, and the
//! CRL files of `[ike] crl`: together they make the
//! [`Revocations`] the engine checks every authentication against.
//!
//! Keys, in the `revoked` tree: `I`+identity (its canonical storage key)
//! and `S`+serial (octets without leading zeros), each -> the Unix time of
//! the revocation (8 octets, big-endian). Every change is flushed before
//! it is acknowledged: a revocation the operator was told about survives
//! a crash.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sixgate_proto::cert::{crl_from_file, parse_serial, Revocations, TrustAnchors};
use sixgate_proto::identity::CanonicalIdentity;

/// One entry of the list, as the CLI names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revoked {
    /// Every certificate of this identity.
    Identity(String),
    /// The leaf certificate with this serial number (hex).
    Serial(String),
}

/// An entry and when it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedEntry {
    /// What.
    pub revoked: Revoked,
    /// When (Unix seconds).
    pub since: u64,
}

/// The list, in sled.
pub struct RevocationList {
    tree: sled::Tree,
}

impl Revoked {
    /// The entry's sled key, or why the text is not an identity or serial.
    fn key(&self) -> Result<Vec<u8>, String> {
        match self {
            Revoked::Identity(text) => {
                let id = CanonicalIdentity::parse(text)
                    .map_err(|e| format!("`{text}` is not an identity: {e}"))?;
                Ok([&b"I"[..], &id.storage_key()].concat())
            }
            Revoked::Serial(text) => {
                let serial = parse_serial(text)
                    .ok_or_else(|| format!("`{text}` is not a serial number in hex"))?;
                Ok([&b"S"[..], &serial].concat())
            }
        }
    }

    fn from_key(key: &[u8]) -> Option<Revoked> {
        let (&tag, rest) = key.split_first()?;
        match tag {
            b'I' => {
                CanonicalIdentity::from_storage_key(rest).map(|i| Revoked::Identity(i.to_string()))
            }
            b'S' => Some(Revoked::Serial(
                rest.iter().map(|b| format!("{b:02x}")).collect(),
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revoked::Identity(i) => write!(f, "identity {i}"),
            Revoked::Serial(s) => write!(f, "serial {s}"),
        }
    }
}

impl RevocationList {
    /// The list in `db`.
    pub fn open(db: &sled::Db) -> sled::Result<RevocationList> {
        Ok(RevocationList {
            tree: db.open_tree("revoked")?,
        })
    }

    /// Adds an entry (durably); false if it was there already.
    pub fn revoke(&self, entry: &Revoked) -> Result<bool, String> {
        let key = entry.key()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // An entry that is there already keeps its date.
        let added = self
            .tree
            .compare_and_swap(key, None::<&[u8]>, Some(&now.to_be_bytes()[..]))
            .map_err(|e| e.to_string())?
            .is_ok();
        self.tree.flush().map_err(|e| e.to_string())?;
        Ok(added)
    }

    /// Removes an entry (durably); false if it was not there.
    pub fn unrevoke(&self, entry: &Revoked) -> Result<bool, String> {
        let old = self.tree.remove(entry.key()?).map_err(|e| e.to_string())?;
        self.tree.flush().map_err(|e| e.to_string())?;
        Ok(old.is_some())
    }

    /// Every entry, identities first.
    pub fn list(&self) -> Result<Vec<RevokedEntry>, String> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let Some(revoked) = Revoked::from_key(&key) else {
                continue;
            };
            let since = <[u8; 8]>::try_from(value.as_ref()).map_or(0, u64::from_be_bytes);
            out.push(RevokedEntry { revoked, since });
        }
        Ok(out)
    }

    /// `base` (the CRLs' entries) with the list added.
    pub fn revocations(&self, base: &Revocations) -> Result<Revocations, String> {
        let mut all = base.clone();
        for entry in self.list()? {
            match entry.revoked {
                Revoked::Identity(text) => {
                    if let Ok(id) = CanonicalIdentity::parse(&text) {
                        all.revoke_identity(id);
                    }
                }
                Revoked::Serial(hex) => {
                    if let Some(serial) = parse_serial(&hex) {
                        all.revoke_serial(&serial);
                    }
                }
            }
        }
        Ok(all)
    }
}

/// Reads the CRL files of `[ike] crl`, each checked against `anchors` at
/// `now`. A file that does not parse or was not signed by an anchor is an
/// error naming the file; a stale one (past its nextUpdate) is used, and
/// comes back in the warnings.
pub fn load_crls(
    paths: &[impl AsRef<Path>],
    anchors: &TrustAnchors,
    now: i64,
) -> Result<(Revocations, Vec<String>), String> {
    let mut revocations = Revocations::new();
    let mut warnings = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let der = crl_from_file(&bytes).map_err(|e| format!("{}: CRL: {e}", path.display()))?;
        let summary = revocations
            .add_crl(anchors, &der, now)
            .map_err(|e| format!("{}: CRL: {e}", path.display()))?;
        tracing::info!(
            "CRL {} from {}: {} revoked",
            path.display(),
            summary.issuer,
            summary.revoked
        );
        if summary.stale {
            warnings.push(format!(
                "{}: the CRL of {} is past its nextUpdate; it is used, but the CA may have revoked more since",
                path.display(),
                summary.issuer
            ));
        }
    }
    Ok((revocations, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_reopen_and_merge_spellings() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let list = RevocationList::open(&db).unwrap();
            assert!(list
                .revoke(&Revoked::Identity("alice@EXAMPLE.net".into()))
                .unwrap());
            assert!(!list
                .revoke(&Revoked::Identity("alice@example.NET".into()))
                .unwrap());
            assert!(list.revoke(&Revoked::Serial("10:02".into())).unwrap());
            assert!(list.revoke(&Revoked::Serial("nonsense".into())).is_err());
        }
        let db = crate::reopen(|| sled::open(dir.path()));
        let list = RevocationList::open(&db).unwrap();
        let entries: Vec<Revoked> = list
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.revoked)
            .collect();
        assert_eq!(
            entries,
            vec![
                Revoked::Identity("alice@example.net".into()),
                Revoked::Serial("1002".into())
            ]
        );
        assert!(list.unrevoke(&Revoked::Serial("0x1002".into())).unwrap());
        assert!(!list.unrevoke(&Revoked::Serial("1002".into())).unwrap());
        assert_eq!(list.list().unwrap().len(), 1);
    }
}
