//! Revocation: certificates a CA withdrew (CRLs, RFC 5280 5) and the
//! identities and serial numbers an operator withdrew on the broker.
//!
//! A CRL is accepted only when a trust anchor signed it; it revokes by
//! issuer and serial number, for every certificate on a path (an
//! intermediate too). The operator's list names canonical identities or
//! leaf serial numbers. [`Revocations::check`] refuses a validated path
//! with [`CertError::RevokedByCrl`] or [`CertError::Revoked`].

use std::collections::HashSet;

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::time::ASN1Time;

use super::{CertError, CertId, TrustAnchors};
use crate::identity::CanonicalIdentity;

/// Everything revoked, from CRLs and from the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    by_crl: HashSet<CertId>,
    serials: HashSet<Vec<u8>>,
    identities: HashSet<CanonicalIdentity>,
}

/// What a CRL said, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSummary {
    /// The issuer, as text.
    pub issuer: String,
    /// How many certificates it revokes.
    pub revoked: usize,
    /// Its nextUpdate (seconds since the epoch), if it has one.
    pub next_update: Option<i64>,
    /// Whether `now` is past its nextUpdate: it is still used (a stale
    /// list is better than none), and the operator should be told.
    pub stale: bool,
}

/// A CRL's DER (from a DER file, or the first CRL in a PEM file).
pub fn crl_from_file(bytes: &[u8]) -> Result<Vec<u8>, CertError> {
    if bytes.starts_with(b"-----") || bytes.iter().take(64).all(|b| b.is_ascii()) {
        let mut reader = bytes;
        if let Some(Ok(der)) = rustls_pemfile::crls(&mut reader).next() {
            return Ok(der.as_ref().to_vec());
        }
        if bytes.first() != Some(&0x30) {
            return Err(CertError::Malformed);
        }
    }
    Ok(bytes.to_vec())
}

/// A serial number as a set key: its octets without leading zeros.
pub(super) fn normalise_serial(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    raw[start..].to_vec()
}

/// Parses a serial number written in hex (`1a2b`, `1A:2B`, `0x1a2b`).
pub fn parse_serial(text: &str) -> Option<Vec<u8>> {
    let hex: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    let bytes: Vec<u8> = (0..padded.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&padded[i..i + 2], 16).ok())
        .collect();
    Some(normalise_serial(&bytes))
}

impl Revocations {
    /// Nothing revoked.
    pub fn new() -> Revocations {
        Revocations::default()
    }

    /// Adds the entries of the CRL `der` after checking that one of
    /// `anchors` signed it and that it is in force at `now` (its
    /// thisUpdate has come).
    pub fn add_crl(
        &mut self,
        anchors: &TrustAnchors,
        der: &[u8],
        now: i64,
    ) -> Result<CrlSummary, CertError> {
        let crl = match CertificateRevocationList::from_der(der) {
            Ok((&[], crl)) => crl,
            _ => return Err(CertError::Malformed),
        };
        let signer = anchors
            .parsed()
            .find(|a| a.subject() == crl.issuer())
            .ok_or(CertError::UnknownIssuer)?;
        crl.verify_signature(signer.public_key())
            .map_err(|_| CertError::BadSignature)?;
        let now_asn1 = ASN1Time::from_timestamp(now).map_err(|_| CertError::Malformed)?;
        if crl.last_update() > now_asn1 {
            return Err(CertError::NotYetValid);
        }
        let issuer = crl.issuer().as_raw().to_vec();
        let mut revoked = 0;
        for entry in crl.iter_revoked_certificates() {
            self.by_crl.insert(CertId {
                issuer: issuer.clone(),
                serial: normalise_serial(entry.raw_serial()),
            });
            revoked += 1;
        }
        let next_update = crl.next_update().map(|t| t.timestamp());
        Ok(CrlSummary {
            issuer: crl.issuer().to_string(),
            revoked,
            next_update,
            stale: next_update.is_some_and(|t| t < now),
        })
    }

    /// Revokes every certificate that proves `identity`.
    pub fn revoke_identity(&mut self, identity: CanonicalIdentity) {
        self.identities.insert(identity);
    }

    /// Revokes the leaf certificates with this serial number (octets, as
    /// [`parse_serial`] gives them).
    pub fn revoke_serial(&mut self, serial: &[u8]) {
        self.serials.insert(normalise_serial(serial));
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.by_crl.is_empty() && self.serials.is_empty() && self.identities.is_empty()
    }

    /// Refuses a path (leaf first, as [`super::Validated::path`] gives it)
    /// and the identity it proved if anything on it is revoked.
    pub fn check(&self, path: &[CertId], identity: &CanonicalIdentity) -> Result<(), CertError> {
        if path.iter().any(|c| self.by_crl.contains(c)) {
            return Err(CertError::RevokedByCrl);
        }
        let leaf_serial = path.first().map(|c| c.serial.as_slice());
        if self.identities.contains(identity)
            || leaf_serial.is_some_and(|s| self.serials.contains(s))
        {
            return Err(CertError::Revoked);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_in_the_spellings_people_use() {
        assert_eq!(parse_serial("1002"), Some(vec![0x10, 0x02]));
        assert_eq!(parse_serial("10:02"), Some(vec![0x10, 0x02]));
        assert_eq!(parse_serial("0x01002"), Some(vec![0x10, 0x02]));
        assert_eq!(parse_serial("00:10:02"), Some(vec![0x10, 0x02]));
        assert_eq!(parse_serial("abc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(parse_serial(""), None);
        assert_eq!(parse_serial("xyz"), None);
    }

    #[test]
    fn garbage_is_not_a_crl() {
        let anchors = TrustAnchors::default();
        let mut r = Revocations::new();
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x03\x02\x01\x00",
            b"-----BEGIN X509 CRL-----\n",
        ] {
            let der = crl_from_file(junk).unwrap_or_default();
            assert!(r.add_crl(&anchors, &der, 0).is_err());
        }
        assert!(r.is_empty());
    }
}
