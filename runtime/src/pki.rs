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

/// Trust anchors from the CA certificates of the configured files.
pub fn trust_anchors(cas: Vec<Vec<u8>>) -> Result<TrustAnchors, String> {
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

/// What the stock clients demand of a broker's certificate beyond what
/// IKE peers check, in a sentence that names who would refuse it: the
/// serverAuth extended key usage (Windows wants it always; iOS and macOS
/// when the extension is there).
pub fn stock_client_eku_warning(leaf: &[u8]) -> Option<&'static str> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf).ok()?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.server_auth => None,
        Ok(Some(_)) => Some(
            "the broker's certificate has an extendedKeyUsage without serverAuth: Windows, \
             iOS and macOS clients will refuse it",
        ),
        _ => Some(
            "the broker's certificate has no extendedKeyUsage: Windows clients refuse a \
             server certificate without serverAuth",
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(file: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../certs-example")
            .join(file);
        load_chain(&path).unwrap().remove(0)
    }

    #[test]
    fn a_broker_certificate_the_stock_clients_refuse_is_warned_about() {
        assert_eq!(stock_client_eku_warning(&leaf("ecdsa/broker.pem")), None);
        // A client's certificate (emailProtection only).
        let eku = stock_client_eku_warning(&leaf("policy/eku-client.pem")).unwrap();
        assert!(eku.contains("without serverAuth") && eku.contains("Windows"));
        let ku_only = stock_client_eku_warning(&leaf("policy/ku-client.pem")).unwrap();
        assert!(ku_only.contains("no extendedKeyUsage"), "{ku_only}");
    }
}
