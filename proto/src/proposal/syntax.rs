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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Encr(Encryption),
    Integ(Integrity),
    Prf(Prf),
    Ke(KeGroup),
    Esn(bool),
}

/// Each keyword, whether it needs `legacy`, and what it stands for. The
/// first word for an algorithm is the one [`IkePolicy::to_strongswan`]
/// writes; the others are strongSwan's aliases.
const WORDS: [(&str, bool, Keyword); 30] = {
    use Keyword::*;
    [
        ("aes128", false, Encr(Encryption::AesCbc { key_bits: 128 })),
        ("aes", false, Encr(Encryption::AesCbc { key_bits: 128 })),
        ("aes256", false, Encr(Encryption::AesCbc { key_bits: 256 })),
        (
            "aes128gcm16",
            false,
            Encr(Encryption::AesGcm16 { key_bits: 128 }),
        ),
        (
            "aes128gcm128",
            false,
            Encr(Encryption::AesGcm16 { key_bits: 128 }),
        ),
        (
            "aes128gcm",
            false,
            Encr(Encryption::AesGcm16 { key_bits: 128 }),
        ),
        (
            "aes256gcm16",
            false,
            Encr(Encryption::AesGcm16 { key_bits: 256 }),
        ),
        (
            "aes256gcm128",
            false,
            Encr(Encryption::AesGcm16 { key_bits: 256 }),
        ),
        (
            "aes256gcm",
            false,
            Encr(Encryption::AesGcm16 { key_bits: 256 }),
        ),
        (
            "chacha20poly1305",
            false,
            Encr(Encryption::ChaCha20Poly1305),
        ),
        ("sha1", true, Integ(Integrity::HmacSha1_96)),
        ("sha", true, Integ(Integrity::HmacSha1_96)),
        ("sha1_96", true, Integ(Integrity::HmacSha1_96)),
        ("sha256", false, Integ(Integrity::HmacSha256_128)),
        ("sha2_256", false, Integ(Integrity::HmacSha256_128)),
        ("sha384", false, Integ(Integrity::HmacSha384_192)),
        ("sha2_384", false, Integ(Integrity::HmacSha384_192)),
        ("sha512", false, Integ(Integrity::HmacSha512_256)),
        ("sha2_512", false, Integ(Integrity::HmacSha512_256)),
        ("prfsha1", true, Prf(crate::crypto::Prf::HmacSha1)),
        ("prfsha256", false, Prf(crate::crypto::Prf::HmacSha256)),
        ("prfsha384", false, Prf(crate::crypto::Prf::HmacSha384)),
        ("prfsha512", false, Prf(crate::crypto::Prf::HmacSha512)),
        ("modp1024", true, Ke(KeGroup::Modp1024)),
        ("modp2048", false, Ke(KeGroup::Modp2048)),
        ("modp3072", false, Ke(KeGroup::Modp3072)),
        ("ecp256", false, Ke(KeGroup::Ecp256)),
        ("ecp384", false, Ke(KeGroup::Ecp384)),
        ("curve25519", false, Ke(KeGroup::Curve25519)),
        ("x25519", false, Ke(KeGroup::Curve25519)),
    ]
};

fn keyword(word: &str) -> Option<(Keyword, bool)> {
    match word {
        "esn" => Some((Keyword::Esn(true), false)),
        "noesn" => Some((Keyword::Esn(false), false)),
        _ => WORDS
            .iter()
            .find(|(w, ..)| *w == word)
            .map(|(_, legacy, k)| (*k, *legacy)),
    }
}

/// strongSwan's word for an algorithm (every algorithm has one).
fn word_of(k: Keyword) -> &'static str {
    WORDS
        .iter()
        .find(|(.., w)| *w == k)
        .map_or("?", |(word, ..)| word)
}

/// `a-b-c` from words.
fn joined(words: impl IntoIterator<Item = &'static str>) -> String {
    words.into_iter().collect::<Vec<_>>().join("-")
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
                prf = integ.iter().map(|i| i.same_hash_prf()).collect();
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

impl IkePolicy {
    /// The policy as strongSwan proposals, for a peer's configuration:
    /// one for the AEAD ciphers (with the PRFs) and one for the others
    /// (with the integrity algorithms), each with every group, as
    /// strongSwan keeps the two kinds apart. [`IkePolicy::from_strongswan`]
    /// reads them back as the same policy.
    pub fn to_strongswan(&self) -> Vec<String> {
        let ke = self.ke.iter().map(|g| word_of(Keyword::Ke(*g)));
        let prf = self.prf.iter().map(|p| word_of(Keyword::Prf(*p)));
        let (aead, cbc): (Vec<Encryption>, Vec<Encryption>) =
            self.encr.iter().partition(|e| e.is_aead());
        let mut out = Vec::new();
        if !aead.is_empty() {
            out.push(joined(
                aead.iter()
                    .map(|e| word_of(Keyword::Encr(*e)))
                    .chain(prf.clone())
                    .chain(ke.clone()),
            ));
        }
        if !cbc.is_empty() && !self.integ.is_empty() {
            out.push(joined(
                cbc.iter()
                    .map(|e| word_of(Keyword::Encr(*e)))
                    .chain(self.integ.iter().map(|i| word_of(Keyword::Integ(*i))))
                    .chain(prf)
                    .chain(ke),
            ));
        }
        out
    }
}

impl EspPolicy {
    /// The policy as strongSwan ESP proposals (AEAD and the others apart,
    /// the PFS groups in both); ESN is left to strongSwan's default.
    pub fn to_strongswan(&self) -> Vec<String> {
        let pfs = self.pfs.iter().map(|g| word_of(Keyword::Ke(*g)));
        let (aead, cbc): (Vec<Encryption>, Vec<Encryption>) =
            self.encr.iter().partition(|e| e.is_aead());
        let mut out = Vec::new();
        if !aead.is_empty() {
            out.push(joined(
                aead.iter()
                    .map(|e| word_of(Keyword::Encr(*e)))
                    .chain(pfs.clone()),
            ));
        }
        if !cbc.is_empty() && !self.integ.is_empty() {
            out.push(joined(
                cbc.iter()
                    .map(|e| word_of(Keyword::Encr(*e)))
                    .chain(self.integ.iter().map(|i| word_of(Keyword::Integ(*i))))
                    .chain(pfs),
            ));
        }
        out
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

    #[test]
    fn policies_written_as_strongswan_proposals_read_back_the_same() {
        for (ike, esp, legacy) in [
            (vec!["default"], vec!["default"], Legacy::Refuse),
            (vec!["default"], vec!["default"], Legacy::Allow),
            (
                vec!["aes256-sha1-modp1024", "aes128gcm16-prfsha256-ecp256"],
                vec!["aes256-sha1", "aes128gcm16-ecp256"],
                Legacy::Allow,
            ),
            (
                vec!["chacha20poly1305-prfsha512-x25519"],
                vec!["aes256gcm16-modp3072"],
                Legacy::Refuse,
            ),
        ] {
            let i = IkePolicy::from_strongswan(&ike, legacy).unwrap();
            let written = i.to_strongswan();
            let mut back = IkePolicy::from_strongswan(&written, legacy).unwrap();
            // Written AEAD-first; the sets and each list's order within a
            // kind are what a peer's choice depends on.
            back.encr
                .sort_by_key(|e| i.encr.iter().position(|x| x == e));
            assert_eq!(back, i, "{ike:?} -> {written:?}");
            let e = EspPolicy::from_strongswan(&esp, legacy).unwrap();
            let written = e.to_strongswan();
            let mut back = EspPolicy::from_strongswan(&written, legacy).unwrap();
            back.encr
                .sort_by_key(|x| e.encr.iter().position(|y| y == x));
            assert_eq!(back, e, "{esp:?} -> {written:?}");
        }
    }
}
