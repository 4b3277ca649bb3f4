//! Policies written as strongSwan writes proposals (`aes256-sha256-modp2048`,
//! `aes128gcm16-prfsha256-x25519`, `default`), so that an operator can paste
//! what a client's documentation or a swanctl.conf says.
//!
//! A responder here accepts any combination of the algorithms the list
//! names (the union of its proposals, in the order first named), which is
//! what [`IkePolicy`] and [`EspPolicy`] express; strongSwan matches each
//! configured proposal on its own. SHA-1 and MODP-1024 are refused unless
//! `legacy` is set, and naming them without it is an error, not a silent
//! omission.

use crate::crypto::{Encryption, Integrity, KeGroup, Legacy, Prf};

use super::{EspPolicy, IkePolicy};

/// A problem with one keyword of one proposal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalSyntaxError {
    /// Not an algorithm we know (or carry).
    #[error("`{0}` in `{1}`: not an algorithm sixgate supports")]
    Unknown(String, String),
    /// SHA-1 or MODP-1024 without `legacy`.
    #[error("`{0}` in `{1}` needs `legacy = true`")]
    NeedsLegacy(String, String),
    /// A proposal that cannot be complete (no encryption, no group...).
    #[error("`{0}`: {1}")]
    Incomplete(String, &'static str),
    /// A keyword that does not belong in this kind of proposal.
    #[error("`{0}` in `{1}`: not for {2} proposals")]
    Misplaced(String, String, &'static str),
}

enum Keyword {
    Encr(Encryption),
    Integ(Integrity),
    Prf(Prf),
    Ke(KeGroup),
    Esn(bool),
}

fn keyword(word: &str) -> Option<(Keyword, bool)> {
    use Keyword::*;
    // (what, whether it needs legacy)
    Some(match word {
        "aes128" | "aes" => (Encr(Encryption::AesCbc { key_bits: 128 }), false),
        "aes256" => (Encr(Encryption::AesCbc { key_bits: 256 }), false),
        "aes128gcm16" | "aes128gcm128" | "aes128gcm" => {
            (Encr(Encryption::AesGcm16 { key_bits: 128 }), false)
        }
        "aes256gcm16" | "aes256gcm128" | "aes256gcm" => {
            (Encr(Encryption::AesGcm16 { key_bits: 256 }), false)
        }
        "chacha20poly1305" => (Encr(Encryption::ChaCha20Poly1305), false),
        "sha1" | "sha" | "sha1_96" => (Integ(Integrity::HmacSha1_96), true),
        "sha256" | "sha2_256" => (Integ(Integrity::HmacSha256_128), false),
        "sha384" | "sha2_384" => (Integ(Integrity::HmacSha384_192), false),
        "sha512" | "sha2_512" => (Integ(Integrity::HmacSha512_256), false),
        "prfsha1" => (Prf(crate::crypto::Prf::HmacSha1), true),
        "prfsha256" => (Prf(crate::crypto::Prf::HmacSha256), false),
        "prfsha384" => (Prf(crate::crypto::Prf::HmacSha384), false),
        "prfsha512" => (Prf(crate::crypto::Prf::HmacSha512), false),
        "modp1024" => (Ke(KeGroup::Modp1024), true),
        "modp2048" => (Ke(KeGroup::Modp2048), false),
        "modp3072" => (Ke(KeGroup::Modp3072), false),
        "ecp256" => (Ke(KeGroup::Ecp256), false),
        "ecp384" => (Ke(KeGroup::Ecp384), false),
        "curve25519" | "x25519" => (Ke(KeGroup::Curve25519), false),
        "esn" => (Esn(true), false),
        "noesn" => (Esn(false), false),
        _ => return None,
    })
}

/// The PRF strongSwan derives from an integrity algorithm when an IKE
/// proposal names none.
fn prf_of(integ: Integrity) -> Prf {
    match integ {
        Integrity::HmacSha1_96 => Prf::HmacSha1,
        Integrity::HmacSha256_128 => Prf::HmacSha256,
        Integrity::HmacSha384_192 => Prf::HmacSha384,
        Integrity::HmacSha512_256 => Prf::HmacSha512,
    }
}

fn push<T: PartialEq>(list: &mut Vec<T>, x: T) {
    if !list.contains(&x) {
        list.push(x);
    }
}

/// Appends what `list` does not hold yet, in order.
fn merge<T: PartialEq>(list: &mut Vec<T>, items: Vec<T>) {
    items.into_iter().for_each(|x| push(list, x));
}

/// The words of `proposal`, each checked against `legacy` (SHA-1 as an
/// ESP integrity algorithm needs none: RFC 8221 keeps it).
fn words(proposal: &str, legacy: Legacy, esp: bool) -> Result<Vec<Keyword>, ProposalSyntaxError> {
    proposal
        .split('-')
        .map(|w| {
            let w = w.trim().to_ascii_lowercase();
            let (k, old) = keyword(&w)
                .ok_or_else(|| ProposalSyntaxError::Unknown(w.clone(), proposal.into()))?;
            let esp_sha1 = esp && matches!(k, Keyword::Integ(Integrity::HmacSha1_96));
            if old && !esp_sha1 && legacy == Legacy::Refuse {
                return Err(ProposalSyntaxError::NeedsLegacy(w, proposal.into()));
            }
            Ok(k)
        })
        .collect()
}

/// A proposal needs a cipher, and a non-AEAD one an integrity algorithm.
fn check_ciphers(
    proposal: &str,
    encr: &[Encryption],
    integ: &[Integrity],
) -> Result<(), ProposalSyntaxError> {
    if encr.is_empty() {
        return Err(ProposalSyntaxError::Incomplete(
            proposal.into(),
            "no encryption algorithm",
        ));
    }
    if integ.is_empty() && encr.iter().any(|e| !e.is_aead()) {
        return Err(ProposalSyntaxError::Incomplete(
            proposal.into(),
            "a non-AEAD cipher needs an integrity algorithm",
        ));
    }
    Ok(())
}

impl IkePolicy {
    /// The IKE policy of a list of strongSwan proposals; `default` stands
    /// for [`IkePolicy::default`]'s algorithms.
    pub fn from_strongswan(
        proposals: &[impl AsRef<str>],
        legacy: Legacy,
    ) -> Result<IkePolicy, ProposalSyntaxError> {
        let mut policy = IkePolicy {
            encr: Vec::new(),
            integ: Vec::new(),
            prf: Vec::new(),
            ke: Vec::new(),
            legacy,
        };
        for proposal in proposals {
            let proposal = proposal.as_ref();
            if proposal == "default" {
                // With `legacy`, what the default refuses only for being
                // legacy is accepted too (Windows' MODP-1024 and SHA-1).
                let d = match legacy {
                    Legacy::Refuse => IkePolicy::default(),
                    Legacy::Allow => IkePolicy::default().with_legacy(),
                };
                merge(&mut policy.encr, d.encr);
                merge(&mut policy.integ, d.integ);
                merge(&mut policy.prf, d.prf);
                merge(&mut policy.ke, d.ke);
                continue;
            }
            let (mut encr, mut integ, mut prf, mut ke) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for k in words(proposal, legacy, false)? {
                match k {
                    Keyword::Encr(e) => push(&mut encr, e),
                    Keyword::Integ(i) => push(&mut integ, i),
                    Keyword::Prf(p) => push(&mut prf, p),
                    Keyword::Ke(g) => push(&mut ke, g),
                    Keyword::Esn(_) => {
                        return Err(ProposalSyntaxError::Misplaced(
                            "esn".into(),
                            proposal.into(),
                            "IKE",
                        ))
                    }
                }
            }
            let aead = encr.iter().any(|e| e.is_aead());
            check_ciphers(proposal, &encr, &integ)?;
            if ke.is_empty() {
                return Err(ProposalSyntaxError::Incomplete(
                    proposal.into(),
                    "no key exchange group",
                ));
            }
            if prf.is_empty() {
                if aead && integ.is_empty() {
                    return Err(ProposalSyntaxError::Incomplete(
                        proposal.into(),
                        "an AEAD proposal needs a PRF (e.g. prfsha256)",
                    ));
                }
                prf = integ.iter().map(|i| prf_of(*i)).collect();
            }
            merge(&mut policy.encr, encr);
            merge(&mut policy.integ, integ);
            merge(&mut policy.prf, prf);
            merge(&mut policy.ke, ke);
        }
        if policy.encr.is_empty() {
            return Err(ProposalSyntaxError::Incomplete(
                String::new(),
                "no proposals",
            ));
        }
        Ok(policy)
    }
}

impl EspPolicy {
    /// The ESP policy of a list of strongSwan ESP proposals; `default`
    /// stands for [`EspPolicy::default`]'s algorithms. Groups named here
    /// are the PFS groups; ESN is allowed unless only `noesn` is named.
    pub fn from_strongswan(
        proposals: &[impl AsRef<str>],
        legacy: Legacy,
    ) -> Result<EspPolicy, ProposalSyntaxError> {
        let mut policy = EspPolicy {
            encr: Vec::new(),
            integ: Vec::new(),
            pfs: Vec::new(),
            esn: true,
            legacy,
        };
        let (mut esn_named, mut noesn_named) = (false, false);
        for proposal in proposals {
            let proposal = proposal.as_ref();
            if proposal == "default" {
                let d = EspPolicy::default();
                merge(&mut policy.encr, d.encr);
                merge(&mut policy.integ, d.integ);
                esn_named = true;
                continue;
            }
            let (mut encr, mut integ) = (Vec::new(), Vec::new());
            for k in words(proposal, legacy, true)? {
                match k {
                    Keyword::Encr(e) => push(&mut encr, e),
                    Keyword::Integ(i) => push(&mut integ, i),
                    Keyword::Ke(g) => push(&mut policy.pfs, g),
                    Keyword::Esn(true) => esn_named = true,
                    Keyword::Esn(false) => noesn_named = true,
                    Keyword::Prf(_) => {
                        return Err(ProposalSyntaxError::Misplaced(
                            "prf".into(),
                            proposal.into(),
                            "ESP",
                        ))
                    }
                }
            }
            check_ciphers(proposal, &encr, &integ)?;
            merge(&mut policy.encr, encr);
            merge(&mut policy.integ, integ);
        }
        if policy.encr.is_empty() {
            return Err(ProposalSyntaxError::Incomplete(
                String::new(),
                "no proposals",
            ));
        }
        policy.esn = esn_named || !noesn_named;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_ios_and_strongswan_spellings() {
        let p = IkePolicy::from_strongswan(
            &["aes256-sha256-modp2048", "aes128gcm16-prfsha256-x25519"],
            Legacy::Refuse,
        )
        .unwrap();
        assert_eq!(
            p.encr,
            [
                Encryption::AesCbc { key_bits: 256 },
                Encryption::AesGcm16 { key_bits: 128 }
            ]
        );
        assert_eq!(p.integ, [Integrity::HmacSha256_128]);
        assert_eq!(p.prf, [Prf::HmacSha256]);
        assert_eq!(p.ke, [KeGroup::Modp2048, KeGroup::Curve25519]);
        let d = IkePolicy::from_strongswan(&["default"], Legacy::Refuse).unwrap();
        assert_eq!(d, IkePolicy::default());
        let old = IkePolicy::from_strongswan(&["default"], Legacy::Allow).unwrap();
        assert!(old.ke.contains(&KeGroup::Modp1024) && old.prf.contains(&Prf::HmacSha1));
        let e = EspPolicy::from_strongswan(&["aes256gcm16", "aes128-sha256-noesn"], Legacy::Refuse)
            .unwrap();
        assert_eq!(
            (e.integ.as_slice(), e.esn),
            (&[Integrity::HmacSha256_128][..], false)
        );
        // Windows' ESP: SHA-1 integrity, which RFC 8221 keeps for ESP.
        let w = EspPolicy::from_strongswan(&["aes256-sha1"], Legacy::Refuse).unwrap();
        assert_eq!(w.integ, [Integrity::HmacSha1_96]);
    }

    #[test]
    fn legacy_algorithms_and_mistakes_are_named() {
        let e = IkePolicy::from_strongswan(&["aes256-sha1-modp1024"], Legacy::Refuse).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sha1` in `aes256-sha1-modp1024` needs `legacy = true`"
        );
        let ok = IkePolicy::from_strongswan(&["aes256-sha1-modp1024"], Legacy::Allow).unwrap();
        assert_eq!(
            (ok.prf.as_slice(), ok.ke.as_slice()),
            (&[Prf::HmacSha1][..], &[KeGroup::Modp1024][..])
        );
        for (bad, says) in [
            ("3des-sha1-modp1024", "`3des`"),
            ("aes256-modp2048", "needs an integrity"),
            ("aes256-sha256", "no key exchange"),
            ("aes128gcm16-x25519", "needs a PRF"),
            ("aes256-sha256-modp2048-esn", "not for IKE"),
        ] {
            let e = IkePolicy::from_strongswan(&[bad], Legacy::Allow)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
