//! Key derivation for the IKE SA (RFC 7296 2.14, 2.18) and for Child SAs
//! (2.17).

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Encryption, Integrity, KeGroup, Prf};

/// The algorithms of an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// Encryption of the SK payload.
    pub encr: Encryption,
    /// Integrity of the SK payload; `None` with an AEAD.
    pub integ: Option<Integrity>,
    /// The PRF.
    pub prf: Prf,
    /// The key exchange method.
    pub ke: KeGroup,
}

/// SKEYSEED = prf(Ni | Nr, g^ir) for a new IKE SA.
pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], shared: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    prf.compute(&key, &[shared])
}

/// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) for a rekeyed IKE SA.
pub fn skeyseed_rekey(
    prf: Prf,
    old_sk_d: &[u8],
    shared: &[u8],
    ni: &[u8],
    nr: &[u8],
) -> Zeroizing<Vec<u8>> {
    prf.compute(old_sk_d, &[shared, ni, nr])
}

/// The seven keys of an IKE SA.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IkeSaKeys {
    /// Derives Child SA keys and the next SKEYSEED.
    pub sk_d: Vec<u8>,
    /// Integrity key, initiator to responder (empty with an AEAD).
    pub sk_ai: Vec<u8>,
    /// Integrity key, responder to initiator.
    pub sk_ar: Vec<u8>,
    /// Encryption key (and salt), initiator to responder.
    pub sk_ei: Vec<u8>,
    /// Encryption key (and salt), responder to initiator.
    pub sk_er: Vec<u8>,
    /// Key for the initiator's AUTH payload.
    pub sk_pi: Vec<u8>,
    /// Key for the responder's AUTH payload.
    pub sk_pr: Vec<u8>,
}

impl std::fmt::Debug for IkeSaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeSaKeys { .. }")
    }
}

impl IkeSaKeys {
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    ///   = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
    pub fn derive(
        suite: &Suite,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeSaKeys {
        let prf_len = suite.prf.output_len();
        let integ_len = suite.integ.map_or(0, Integrity::key_len);
        let encr_len = suite.encr.keymat_len();
        let total = 3 * prf_len + 2 * integ_len + 2 * encr_len;
        let stream = suite.prf.plus(
            skeyseed,
            &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
            total,
        );
        let mut take = split(&stream);
        IkeSaKeys {
            sk_d: take(prf_len),
            sk_ai: take(integ_len),
            sk_ar: take(integ_len),
            sk_ei: take(encr_len),
            sk_er: take(encr_len),
            sk_pi: take(prf_len),
            sk_pr: take(prf_len),
        }
    }
}

/// Cuts consecutive pieces off a key stream.
fn split(stream: &[u8]) -> impl FnMut(usize) -> Vec<u8> + '_ {
    let mut at = 0;
    move |len| {
        let piece = stream[at..at + len].to_vec();
        at += len;
        piece
    }
}

/// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) for a Child SA, `len` octets.
pub fn child_keymat(
    prf: Prf,
    sk_d: &[u8],
    pfs_shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    match pfs_shared {
        Some(shared) => prf.plus(sk_d, &[shared, ni, nr], len),
        None => prf.plus(sk_d, &[ni, nr], len),
    }
}

/// The keys of one direction of an ESP SA, by algorithm: what a data plane
/// (the kernel or the userspace one) needs to install it.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub enum EspKeys {
    /// AES-GCM with a 16-octet ICV (RFC 4106).
    AesGcm16 {
        /// 16 or 32 octets.
        key: Vec<u8>,
        /// The implicit nonce salt.
        salt: [u8; 4],
    },
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305 {
        /// 32 octets.
        key: Vec<u8>,
        /// The implicit nonce salt.
        salt: [u8; 4],
    },
    /// AES-CBC with an HMAC-SHA2 integrity check.
    AesCbcHmac {
        /// 16 or 32 octets.
        enc_key: Vec<u8>,
        /// The integrity algorithm.
        #[zeroize(skip)]
        integ: Integrity,
        /// Its key.
        auth_key: Vec<u8>,
    },
}

impl std::fmt::Debug for EspKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EspKeys::AesGcm16 { key, .. } => write!(f, "EspKeys::AesGcm16({} bits)", key.len() * 8),
            EspKeys::ChaCha20Poly1305 { .. } => f.write_str("EspKeys::ChaCha20Poly1305"),
            EspKeys::AesCbcHmac { enc_key, integ, .. } => {
                write!(
                    f,
                    "EspKeys::AesCbcHmac({} bits, {integ:?})",
                    enc_key.len() * 8
                )
            }
        }
    }
}

impl EspKeys {
    /// The algorithm and ready-to-use keys, for a data plane that does its
    /// own ESP.
    pub fn prepare(&self) -> Option<(Encryption, super::CipherKey, Option<super::IntegrityKey>)> {
        let with_salt = |key: &[u8], salt: &[u8; 4]| {
            let mut k = zeroize::Zeroizing::new(key.to_vec());
            k.extend_from_slice(salt);
            k
        };
        match self {
            EspKeys::AesGcm16 { key, salt } => {
                let encr = Encryption::AesGcm16 {
                    key_bits: u16::try_from(key.len() * 8).ok()?,
                };
                Some((encr, encr.key(&with_salt(key, salt))?, None))
            }
            EspKeys::ChaCha20Poly1305 { key, salt } => {
                let encr = Encryption::ChaCha20Poly1305;
                Some((encr, encr.key(&with_salt(key, salt))?, None))
            }
            EspKeys::AesCbcHmac {
                enc_key,
                integ,
                auth_key,
            } => {
                let encr = Encryption::AesCbc {
                    key_bits: u16::try_from(enc_key.len() * 8).ok()?,
                };
                Some((encr, encr.key(enc_key)?, Some(integ.key(auth_key))))
            }
        }
    }
}

/// The keys of a Child SA: both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaKeys {
    /// Protects traffic from the IKE initiator to the responder.
    pub initiator_to_responder: EspKeys,
    /// Protects traffic from the IKE responder to the initiator.
    pub responder_to_initiator: EspKeys,
}

impl ChildSaKeys {
    /// How much KEYMAT the algorithms need.
    pub fn keymat_len(encr: Encryption, integ: Option<Integrity>) -> usize {
        2 * (encr.keymat_len() + integ.map_or(0, Integrity::key_len))
    }

    /// Cuts KEYMAT into keys (RFC 7296 2.17: initiator-to-responder first;
    /// in each direction the encryption key, then the integrity key).
    /// `None` if the lengths do not fit the algorithms, or CBC comes
    /// without an integrity algorithm.
    pub fn from_keymat(
        encr: Encryption,
        integ: Option<Integrity>,
        keymat: &[u8],
    ) -> Option<ChildSaKeys> {
        if keymat.len() != Self::keymat_len(encr, integ) || encr.is_aead() == integ.is_some() {
            return None;
        }
        let mut take = split(keymat);
        let mut one = || -> Option<EspKeys> {
            let enc = Zeroizing::new(take(encr.keymat_len()));
            Some(match (encr, integ) {
                (Encryption::AesGcm16 { .. }, None) | (Encryption::ChaCha20Poly1305, None) => {
                    let (key, salt) = enc.split_at(enc.len() - 4);
                    let salt = salt.try_into().ok()?;
                    if let Encryption::ChaCha20Poly1305 = encr {
                        EspKeys::ChaCha20Poly1305 {
                            key: key.to_vec(),
                            salt,
                        }
                    } else {
                        EspKeys::AesGcm16 {
                            key: key.to_vec(),
                            salt,
                        }
                    }
                }
                (Encryption::AesCbc { .. }, Some(integ)) => EspKeys::AesCbcHmac {
                    enc_key: enc.to_vec(),
                    integ,
                    auth_key: take(integ.key_len()),
                },
                _ => return None,
            })
        };
        let initiator_to_responder = one()?;
        let responder_to_initiator = one()?;
        Some(ChildSaKeys {
            initiator_to_responder,
            responder_to_initiator,
        })
    }
}
