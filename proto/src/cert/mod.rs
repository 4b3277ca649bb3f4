//! X.509 certificates: loading them, validating a peer's chain against the
//! configured trust anchors, revocation, and checking that the peer's IKE
//! identity is one the certificate vouches for.
//!
//! Validation is deliberately small and strict. Each certificate on the
//! path must be signed by the next and valid at the time the caller passes
//! in (this crate has no clock); every issuer must be a CA (basicConstraints
//! CA:TRUE, keyCertSign if it has a keyUsage), within its pathLenConstraint
//! and the name constraints above it; no certificate may carry a critical
//! extension we do not understand; SHA-1 signatures and RSA keys under 2048
//! bits are refused unless `legacy` allows them; and the leaf must be fit
//! for IKE as a client or as a server ([`Purpose`]). Each reason for refusal
//! is its own [`CertError`] variant, so logs say why a peer was turned away.

mod policy;
mod revocation;

pub use policy::{Purpose, MIN_RSA_BITS};
pub use revocation::{crl_from_file, parse_serial, CrlSummary, Revocations};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::crypto::Legacy;
use crate::identity::{rfc822_matches, CanonicalIdentity};
use crate::wire::{Identification, Identity};

/// The longest chain (leaf included) we follow.
pub const MAX_CHAIN_LEN: usize = 8;

/// Why a certificate or chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A certificate did not parse.
    #[error("certificate does not parse")]
    Malformed,
    /// The chain ends at an issuer that is not a trust anchor.
    #[error("certificate not issued by a trusted CA")]
    UnknownIssuer,
    /// A certificate on the path has expired.
    #[error("certificate expired")]
    Expired,
    /// A certificate on the path is not valid yet.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// An issuer on the path is not a CA (no basicConstraints CA:TRUE, or
    /// a keyUsage without keyCertSign).
    #[error("issuer is not a CA")]
    NotACa,
    /// A signature on the path does not verify.
    #[error("certificate signature does not verify")]
    BadSignature,
    /// The chain is longer than [`MAX_CHAIN_LEN`].
    #[error("certificate chain too long")]
    ChainTooLong,
    /// The IKE identity is not in the certificate.
    #[error("identity not found in the certificate")]
    IdentityMismatch,
    /// No certificate was given.
    #[error("no certificate")]
    Missing,
    /// The leaf's keyUsage does not allow digitalSignature.
    #[error("certificate's keyUsage does not allow signatures")]
    KeyUsage,
    /// The leaf's extendedKeyUsage allows neither IKE nor the role.
    #[error("certificate's extendedKeyUsage allows neither IKE nor {}", match .0 {
        Purpose::Client => "clientAuth",
        Purpose::Server => "serverAuth",
    })]
    ExtendedKeyUsage(Purpose),
    /// A CA on the path has more intermediates below it than its
    /// pathLenConstraint allows.
    #[error("certificate chain longer than a CA's pathLenConstraint allows")]
    PathLenExceeded,
    /// A name in a certificate is outside the name constraints of a CA
    /// above it.
    #[error("certificate names outside a CA's name constraints")]
    NameConstraints,
    /// A certificate carries a critical extension we do not enforce.
    #[error("certificate has an unknown critical extension {0}")]
    UnknownCriticalExtension(String),
    /// A signature on the path uses SHA-1 (allowed only with `legacy`).
    #[error("certificate signed with SHA-1 (only `legacy = true` accepts it)")]
    WeakSignature,
    /// An RSA key on the path is too short (allowed only with `legacy`).
    #[error("certificate has a {0}-bit RSA key (under 2048 bits only `legacy = true` accepts it)")]
    WeakKey(usize),
    /// A certificate on the path is on its CA's revocation list.
    #[error("certificate revoked by its CA's CRL")]
    RevokedByCrl,
    /// The identity or the certificate was revoked on the broker.
    #[error("certificate or identity revoked by the broker's operator")]
    Revoked,
}

/// Reads every certificate in a PEM file, in order, as DER.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    let mut reader = pem;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut reader)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect();
    let certs = certs.map_err(|_| CertError::Malformed)?;
    if certs.is_empty() {
        return Err(CertError::Missing);
    }
    for der in &certs {
        parse(der)?;
    }
    Ok(certs)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok((&[], cert)) => Ok(cert),
        _ => Err(CertError::Malformed),
    }
}

/// A certificate's place in revocation: its issuer's name (DER) and its
/// serial number (octets without leading zeros).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertId {
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

impl CertId {
    /// The place of the certificate `der`.
    pub fn of_der(der: &[u8]) -> Result<CertId, CertError> {
        Ok(CertId::of(&parse(der)?))
    }

    fn of(cert: &X509Certificate<'_>) -> CertId {
        CertId {
            issuer: cert.issuer().as_raw().to_vec(),
            serial: revocation::normalise_serial(cert.raw_serial()),
        }
    }

    /// The serial number, in hex, as `client revoke --serial` takes it.
    pub fn serial_hex(&self) -> String {
        self.serial.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A chain that validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated<'c> {
    /// The leaf, DER.
    pub leaf: &'c [u8],
    /// Every certificate on the path below the trust anchor, leaf first.
    pub path: Vec<CertId>,
}

/// The CA certificates a peer's chain must lead to.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    cas: Vec<Vec<u8>>,
    /// The CERTREQ hashes, computed once: every IKE_SA_INIT answer sends them.
    certreq: Vec<u8>,
}

impl TrustAnchors {
    /// Trust anchors from DER certificates; each must parse and be a CA.
    pub fn new(cas: Vec<Vec<u8>>) -> Result<TrustAnchors, CertError> {
        let mut certreq = Vec::new();
        for der in &cas {
            let cert = parse(der)?;
            if !policy::is_ca(&cert) {
                return Err(CertError::NotACa);
            }
            let hash = ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                cert.public_key().raw,
            );
            certreq.extend_from_slice(hash.as_ref());
        }
        Ok(TrustAnchors { cas, certreq })
    }

    /// The anchors, as DER.
    pub fn certificates(&self) -> &[Vec<u8>] {
        &self.cas
    }

    /// The anchors, parsed (each parsed when it was added).
    fn parsed(&self) -> impl Iterator<Item = X509Certificate<'_>> {
        self.cas.iter().filter_map(|d| parse(d).ok())
    }

    /// The SHA-1 hashes of the anchors' SubjectPublicKeyInfo, as a CERTREQ
    /// payload carries them (RFC 7296 3.7).
    pub fn certreq_hashes(&self) -> &[u8] {
        &self.certreq
    }

    /// Validates `chain` (leaf first, then any intermediates in any order)
    /// at `now` (seconds since the Unix epoch) for `purpose`;
    /// [`Legacy::Allow`] lets SHA-1 signatures and short RSA keys through.
    pub fn validate<'c>(
        &self,
        chain: &'c [Vec<u8>],
        now: i64,
        purpose: Purpose,
        legacy: Legacy,
    ) -> Result<Validated<'c>, CertError> {
        let leaf_der = chain.first().ok_or(CertError::Missing)?;
        let now = ASN1Time::from_timestamp(now).map_err(|_| CertError::Malformed)?;
        let parsed: Vec<X509Certificate<'_>> =
            chain.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
        let anchors: Vec<X509Certificate<'_>> = self.parsed().collect();

        // Build the path first (leaf, intermediates..., anchor), checking
        // each link's signature; then check the path as a whole.
        let mut path: Vec<&X509Certificate<'_>> = vec![&parsed[0]];
        let anchor = loop {
            let current = path[path.len() - 1];
            check_time(current, now)?;
            if let Some(anchor) = anchors.iter().find(|a| issued_by(current, a)) {
                check_time(anchor, now)?;
                break anchor;
            }
            if path.len() == MAX_CHAIN_LEN {
                return Err(CertError::ChainTooLong);
            }
            // Not signed by an anchor: continue through an intermediate the
            // peer sent (never through one already on the path).
            let Some(next) = parsed[1..].iter().find(|c| {
                c.subject() == current.issuer() && !path.iter().any(|p| std::ptr::eq(*p, *c))
            }) else {
                return Err(CertError::UnknownIssuer);
            };
            if current.verify_signature(Some(next.public_key())).is_err() {
                return Err(CertError::BadSignature);
            }
            if !policy::is_ca(next) {
                return Err(CertError::NotACa);
            }
            path.push(next);
        };

        for cert in &path {
            policy::check_critical_extensions(cert)?;
            policy::check_algorithms(cert, true, legacy)?;
        }
        // The anchor's own signature is not relied on; its key is.
        policy::check_algorithms(anchor, false, legacy)?;
        let issuers: Vec<&X509Certificate<'_>> =
            path[1..].iter().copied().chain([anchor]).collect();
        for (i, issuer) in issuers.iter().enumerate() {
            // Below issuer i (at path index i + 1) are the intermediates
            // at path indexes 1..=i.
            policy::check_path_len(issuer, i)?;
            for cert in &path[..=i] {
                policy::check_name_constraints(issuer, cert)?;
            }
        }
        policy::check_leaf_usage(&parsed[0], purpose)?;
        Ok(Validated {
            leaf: leaf_der,
            path: path.iter().map(|c| CertId::of(c)).collect(),
        })
    }
}

/// Whether `cert` names `issuer` as its issuer and carries its signature.
/// A matching name with a bad signature is not an issuer: an attacker can
/// copy names, not keys.
fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer() == issuer.subject() && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn check_time(cert: &X509Certificate<'_>, now: ASN1Time) -> Result<(), CertError> {
    let validity = cert.validity();
    if now < validity.not_before {
        Err(CertError::NotYetValid)
    } else if now > validity.not_after {
        Err(CertError::Expired)
    } else {
        Ok(())
    }
}

/// Checks that `id` is vouched for by the certificate `der`, and returns
/// the identity in its canonical form, the one key every per-identity
/// record is filed under. An FQDN must be one of its dNSName SANs
/// (compared without regard to case); an RFC 822 name one of its
/// rfc822Name SANs (the local part exactly, the domain without regard to
/// case, as RFC 5280 7.5 says, so one certificate proves one spelling); an
/// address an iPAddress SAN; and a DN the subject, byte for byte.
pub fn match_identity(der: &[u8], id: &Identification) -> Result<CanonicalIdentity, CertError> {
    let cert = parse(der)?;
    let sans: Vec<GeneralName<'_>> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.clone(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(CertError::Malformed),
    };
    let found = match id.identity() {
        Identity::Fqdn(name) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            sans.iter()
                .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(name)))
        }
        Identity::Rfc822(addr) => sans
            .iter()
            .any(|n| matches!(n, GeneralName::RFC822Name(e) if rfc822_matches(e, addr))),
        Identity::Address(_) => sans
            .iter()
            .any(|n| matches!(n, GeneralName::IPAddress(a) if *a == id.data.as_slice())),
        Identity::DistinguishedName(dn) => cert.subject().as_raw() == dn,
        Identity::Other(..) => false,
    };
    if !found {
        return Err(CertError::IdentityMismatch);
    }
    CanonicalIdentity::from_wire(id).map_err(|_| CertError::IdentityMismatch)
}

/// A certificate's validity period, `(notBefore, notAfter)` in seconds
/// since the Unix epoch, so a daemon can say how long its own certificate
/// has left.
pub fn validity_period(der: &[u8]) -> Result<(i64, i64), CertError> {
    let validity = parse(der)?.validity().clone();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Checks a leaf's keyUsage and extendedKeyUsage as a peer checking it for
/// `purpose` would, so a daemon finds out before its peers do.
pub fn check_usage(der: &[u8], purpose: Purpose) -> Result<(), CertError> {
    policy::check_leaf_usage(&parse(der)?, purpose)
}

/// The names a certificate vouches for as IKE identities: its subject (a
/// DN) and its dNSName, rfc822Name and iPAddress SANs, for messages that
/// say what an identity could have been.
pub fn certified_names(der: &[u8]) -> Result<Vec<String>, CertError> {
    let cert = parse(der)?;
    let mut names = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::RFC822Name(e) => names.push((*e).to_string()),
                GeneralName::IPAddress(a) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*a) {
                        names.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*a) {
                        names.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    names.push(cert.subject().to_string());
    Ok(names)
}

/// The DER of the certificate's subject, for an ID_DER_ASN1_DN identity.
pub fn subject_der(der: &[u8]) -> Result<Vec<u8>, CertError> {
    Ok(parse(der)?.subject().as_raw().to_vec())
}
