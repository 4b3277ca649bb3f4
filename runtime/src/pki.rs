//! Loading the daemons' identity, certificate chain, key and trust
//! anchors from files, with errors that name the file.

use std::path::Path;

use sixgate_proto::auth::PrivateKey;
use sixgate_proto::cert::{certificates_from_pem, subject_der, TrustAnchors};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::Identification;

/// An identity as written in a configuration file: an address, an e-mail
/// style RFC 822 name (with '@'), an RFC 4514 distinguished name (with
/// '='), or else a host name; in its canonical form.
pub fn parse_identity(text: &str) -> Result<CanonicalIdentity, String> {
    CanonicalIdentity::parse(text).map_err(|e| e.to_string())
}

/// Our own identity for IDi/IDr: as configured, and for a distinguished
/// name the DER of the certificate's subject, which it must name.
pub fn own_identity(text: &str, chain: &[Vec<u8>]) -> Result<Identification, String> {
    let canonical = parse_identity(text)?;
    if let Some(id) = canonical.to_wire() {
        return Ok(id);
    }
    let leaf = chain.first().ok_or("empty certificate chain")?;
    let subject = subject_der(leaf).map_err(|e| e.to_string())?;
    let id = Identification::distinguished_name(subject);
    match CanonicalIdentity::from_wire(&id) {
        Ok(c) if c == canonical => Ok(id),
        Ok(c) => Err(format!("the certificate's subject is {c}, not {canonical}")),
        Err(e) => Err(format!("the certificate's subject: {e}")),
    }
}

/// The certificate chain (leaf first) in a PEM file.
pub fn load_chain(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    certificates_from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    PrivateKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// Trust anchors from CA certificate files.
pub fn load_anchors(paths: &[impl AsRef<Path>]) -> Result<TrustAnchors, String> {
    let mut cas = Vec::new();
    for p in paths {
        cas.extend(load_chain(p.as_ref())?);
    }
    if cas.is_empty() {
        return Err("no CA certificates given".into());
    }
    TrustAnchors::new(cas).map_err(|e| format!("CA certificate: {e}"))
}

/// Checks that the key belongs to the leaf certificate, so a mismatch is
/// found at start-up rather than by every peer.
pub fn check_key_matches(chain: &[Vec<u8>], key: &PrivateKey) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let leaf = chain.first().ok_or("empty certificate chain")?;
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    if cert.public_key().subject_public_key.data.as_ref() == key.public_key() {
        Ok(())
    } else {
        Err("the private key does not belong to the certificate".into())
    }
}

/// What a daemon proves itself with and trusts, read at start (before it
/// gives up the right to read root's files).
pub struct Credentials {
    /// The identity we claim (IDi or IDr), one the leaf certifies.
    pub identity: Identification,
    /// Our certificate chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's private key.
    pub key: PrivateKey,
    /// The CAs we accept the peer's chain from.
    pub anchors: TrustAnchors,
}

impl Credentials {
    /// Reads the chain, the key (which must match the chain's leaf) and the
    /// trust anchors; `identity` must be one the leaf certifies.
    pub fn load(
        identity: &str,
        certificate: &Path,
        private_key: &Path,
        ca: &[impl AsRef<Path>],
    ) -> Result<Credentials, String> {
        let chain = load_chain(certificate)?;
        let identity = own_identity(identity, &chain)?;
        let key = load_key(private_key)?;
        check_key_matches(&chain, &key).map_err(|e| format!("{}: {e}", private_key.display()))?;
        Ok(Credentials {
            identity,
            chain,
            key,
            anchors: load_anchors(ca)?,
        })
    }

    /// An engine configuration with these credentials and defaults
    /// otherwise.
    pub fn endpoint_config(self) -> sixgate_proto::endpoint::Config {
        sixgate_proto::endpoint::Config::new(
            self.identity,
            self.chain,
            std::sync::Arc::new(self.key),
            self.anchors,
        )
    }
}
