//! Encryption algorithms for the SK payload and ESP: AES-GCM with a 16-octet
//! ICV (RFC 4106, RFC 5282), ChaCha20-Poly1305 (RFC 7634) and AES-CBC
//! (RFC 3602), which needs a separate integrity algorithm.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ring::aead;

use crate::error::PeerMisbehaved;
use crate::wire::{encr_id, Transform, TransformType};

/// A negotiated encryption algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// ENCR_AES_GCM_16 with a 128- or 256-bit key.
    AesGcm16 {
        /// Key length in bits.
        key_bits: u16,
    },
    /// ENCR_CHACHA20_POLY1305.
    ChaCha20Poly1305,
    /// ENCR_AES_CBC with a 128- or 256-bit key.
    AesCbc {
        /// Key length in bits.
        key_bits: u16,
    },
}

impl Encryption {
    /// The algorithm an ENCR transform names, if implemented.
    pub fn from_transform(t: &Transform) -> Option<Encryption> {
        if t.ty != TransformType::ENCR {
            return None;
        }
        match (t.id, t.key_length()) {
            (encr_id::AES_GCM_16, Some(bits @ (128 | 256))) => {
                Some(Encryption::AesGcm16 { key_bits: bits })
            }
            (encr_id::AES_CBC, Some(bits @ (128 | 256))) => {
                Some(Encryption::AesCbc { key_bits: bits })
            }
            (encr_id::CHACHA20_POLY1305, None) => Some(Encryption::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The transform that names this algorithm.
    pub fn transform(self) -> Transform {
        match self {
            Encryption::AesGcm16 { key_bits } => {
                Transform::with_key_length(TransformType::ENCR, encr_id::AES_GCM_16, key_bits)
            }
            Encryption::AesCbc { key_bits } => {
                Transform::with_key_length(TransformType::ENCR, encr_id::AES_CBC, key_bits)
            }
            Encryption::ChaCha20Poly1305 => {
                Transform::new(TransformType::ENCR, encr_id::CHACHA20_POLY1305)
            }
        }
    }

    /// Whether this is an AEAD, which needs no integrity transform.
    pub fn is_aead(self) -> bool {
        !matches!(self, Encryption::AesCbc { .. })
    }

    /// Length of the keying material taken for it: the key, plus the 4-octet
    /// salt for the AEADs (RFC 5282 7.1, RFC 7634 2).
    pub fn keymat_len(self) -> usize {
        match self {
            Encryption::AesGcm16 { key_bits } => usize::from(key_bits) / 8 + 4,
            Encryption::ChaCha20Poly1305 => 32 + 4,
            Encryption::AesCbc { key_bits } => usize::from(key_bits) / 8,
        }
    }

    /// Length of the explicit IV on the wire.
    pub fn iv_len(self) -> usize {
        match self {
            Encryption::AesCbc { .. } => 16,
            _ => 8,
        }
    }

    /// The block size the plaintext (with padding and pad length) must be
    /// a multiple of.
    pub fn block_len(self) -> usize {
        match self {
            Encryption::AesCbc { .. } => 16,
            _ => 1,
        }
    }

    /// Length of the AEAD tag (zero for CBC, whose ICV comes from the
    /// integrity algorithm).
    pub fn tag_len(self) -> usize {
        if self.is_aead() {
            16
        } else {
            0
        }
    }

    /// Prepares a key from its keying material (`keymat_len()` octets).
    pub fn key(self, keymat: &[u8]) -> Option<CipherKey> {
        if keymat.len() != self.keymat_len() {
            return None;
        }
        Some(match self {
            Encryption::AesGcm16 { key_bits } => {
                let alg = if key_bits == 128 {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                CipherKey::aead(alg, keymat)?
            }
            Encryption::ChaCha20Poly1305 => CipherKey::aead(&aead::CHACHA20_POLY1305, keymat)?,
            Encryption::AesCbc { .. } => CipherKey::Cbc(keymat.to_vec().into()),
        })
    }
}

/// An encryption key ready for use.
pub enum CipherKey {
    /// AES-GCM or ChaCha20-Poly1305 with the implicit salt.
    Aead {
        /// The ring key.
        key: Box<aead::LessSafeKey>,
        /// The salt that with the explicit IV makes the nonce.
        salt: [u8; 4],
    },
    /// AES-CBC (the raw key; the cipher is keyed per message).
    Cbc(zeroize::Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for CipherKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CipherKey::Aead { key, .. } => write!(f, "CipherKey::Aead({:?})", key.algorithm()),
            CipherKey::Cbc(k) => write!(f, "CipherKey::Cbc({} bits)", k.len() * 8),
        }
    }
}

impl CipherKey {
    fn aead(alg: &'static aead::Algorithm, keymat: &[u8]) -> Option<CipherKey> {
        let (key, salt) = keymat.split_at(keymat.len() - 4);
        let key = aead::UnboundKey::new(alg, key).ok()?;
        Some(CipherKey::Aead {
            key: Box::new(aead::LessSafeKey::new(key)),
            salt: salt.try_into().ok()?,
        })
    }

    /// Encrypts `in_out` in place. For an AEAD, `aad` is authenticated and
    /// the 16-octet tag is written to `tag`; for CBC, `in_out` must be a
    /// multiple of 16 octets, and `aad`/`tag` are unused (the caller adds
    /// the integrity check).
    pub fn seal(
        &self,
        iv: &[u8],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), PeerMisbehaved> {
        match self {
            CipherKey::Aead { key, salt } => {
                let nonce = nonce(salt, iv)?;
                let t = key
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), in_out)
                    .map_err(|_| PeerMisbehaved::IntegrityCheckFailed)?;
                tag.copy_from_slice(t.as_ref());
            }
            CipherKey::Cbc(k) => {
                let len = in_out.len();
                macro_rules! enc {
                    ($aes:ty) => {
                        cbc::Encryptor::<$aes>::new_from_slices(k, iv)
                            .map_err(|_| PeerMisbehaved::BadPadding)?
                            .encrypt_padded_mut::<NoPadding>(in_out, len)
                            .map_err(|_| PeerMisbehaved::BadPadding)?
                    };
                }
                match k.len() {
                    16 => enc!(aes::Aes128),
                    _ => enc!(aes::Aes256),
                };
            }
        }
        Ok(())
    }

    /// Decrypts `in_out` in place, checking the AEAD tag first. Returns the
    /// plaintext length.
    pub fn open(
        &self,
        iv: &[u8],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8],
    ) -> Result<usize, PeerMisbehaved> {
        match self {
            CipherKey::Aead { key, salt } => {
                let nonce = nonce(salt, iv)?;
                let tag =
                    aead::Tag::try_from(tag).map_err(|_| PeerMisbehaved::IntegrityCheckFailed)?;
                key.open_in_place_separate_tag(nonce, aead::Aad::from(aad), tag, in_out, 0..)
                    .map_err(|_| PeerMisbehaved::IntegrityCheckFailed)?;
                Ok(in_out.len())
            }
            CipherKey::Cbc(k) => {
                macro_rules! dec {
                    ($aes:ty) => {
                        cbc::Decryptor::<$aes>::new_from_slices(k, iv)
                            .map_err(|_| PeerMisbehaved::BadPadding)?
                            .decrypt_padded_mut::<NoPadding>(in_out)
                            .map_err(|_| PeerMisbehaved::BadPadding)?
                            .len()
                    };
                }
                Ok(match k.len() {
                    16 => dec!(aes::Aes128),
                    _ => dec!(aes::Aes256),
                })
            }
        }
    }
}

fn nonce(salt: &[u8; 4], iv: &[u8]) -> Result<aead::Nonce, PeerMisbehaved> {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    if iv.len() != 8 {
        return Err(PeerMisbehaved::IntegrityCheckFailed);
    }
    n[4..].copy_from_slice(iv);
    Ok(aead::Nonce::assume_unique_for_key(n))
}
