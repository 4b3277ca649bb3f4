//! Integrity algorithms for the SK payload and ESP (RFC 4868).

use ring::hmac;

use super::{constant_time_eq, Legacy};
use crate::wire::{integ_id, TransformId};

/// A negotiated integrity algorithm: HMAC truncated to half its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// AUTH_HMAC_SHA2_256_128.
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192.
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256.
    HmacSha512_256,
    /// AUTH_HMAC_SHA1_96, legacy only.
    HmacSha1_96,
}

impl Integrity {
    /// The algorithm a transform ID names, if implemented and allowed.
    pub fn from_id(id: TransformId, legacy: Legacy) -> Option<Integrity> {
        match id {
            integ_id::HMAC_SHA2_256_128 => Some(Integrity::HmacSha256_128),
            integ_id::HMAC_SHA2_384_192 => Some(Integrity::HmacSha384_192),
            integ_id::HMAC_SHA2_512_256 => Some(Integrity::HmacSha512_256),
            integ_id::HMAC_SHA1_96 if legacy == Legacy::Allow => Some(Integrity::HmacSha1_96),
            _ => None,
        }
    }

    /// The PRF of the same hash: what strongSwan derives when an IKE
    /// proposal names none, and what Apple and Windows pair with it.
    pub fn same_hash_prf(self) -> super::Prf {
        use super::Prf;
        match self {
            Integrity::HmacSha1_96 => Prf::HmacSha1,
            Integrity::HmacSha256_128 => Prf::HmacSha256,
            Integrity::HmacSha384_192 => Prf::HmacSha384,
            Integrity::HmacSha512_256 => Prf::HmacSha512,
        }
    }

    /// The integrity algorithm of the same hash as `prf`.
    pub fn of_same_hash(prf: super::Prf) -> Integrity {
        use super::Prf;
        match prf {
            Prf::HmacSha1 => Integrity::HmacSha1_96,
            Prf::HmacSha256 => Integrity::HmacSha256_128,
            Prf::HmacSha384 => Integrity::HmacSha384_192,
            Prf::HmacSha512 => Integrity::HmacSha512_256,
        }
    }

    /// The transform ID.
    pub fn id(self) -> TransformId {
        match self {
            Integrity::HmacSha256_128 => integ_id::HMAC_SHA2_256_128,
            Integrity::HmacSha384_192 => integ_id::HMAC_SHA2_384_192,
            Integrity::HmacSha512_256 => integ_id::HMAC_SHA2_512_256,
            Integrity::HmacSha1_96 => integ_id::HMAC_SHA1_96,
        }
    }

    pub(crate) fn algorithm(self) -> hmac::Algorithm {
        match self {
            Integrity::HmacSha256_128 => hmac::HMAC_SHA256,
            Integrity::HmacSha384_192 => hmac::HMAC_SHA384,
            Integrity::HmacSha512_256 => hmac::HMAC_SHA512,
            Integrity::HmacSha1_96 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        }
    }

    /// Key length: the full hash output (RFC 4868 2.1.1).
    pub fn key_len(self) -> usize {
        match self {
            Integrity::HmacSha256_128 => 32,
            Integrity::HmacSha384_192 => 48,
            Integrity::HmacSha512_256 => 64,
            Integrity::HmacSha1_96 => 20,
        }
    }

    /// Length of the truncated ICV.
    pub fn icv_len(self) -> usize {
        match self {
            Integrity::HmacSha256_128 => 16,
            Integrity::HmacSha384_192 => 24,
            Integrity::HmacSha512_256 => 32,
            Integrity::HmacSha1_96 => 12,
        }
    }

    /// A prepared key for this algorithm.
    pub fn key(self, key: &[u8]) -> IntegrityKey {
        IntegrityKey {
            alg: self,
            key: hmac::Key::new(self.algorithm(), key),
        }
    }
}

/// An integrity key ready for use (ring's key type keeps no plaintext key
/// around, only the padded HMAC states).
#[derive(Clone)]
pub struct IntegrityKey {
    alg: Integrity,
    key: hmac::Key,
}

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrityKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl IntegrityKey {
    /// The algorithm.
    pub fn algorithm(&self) -> Integrity {
        self.alg
    }

    /// Writes the truncated ICV over the concatenated parts into `icv`,
    /// which must be `icv_len()` long.
    pub fn sign_into(&self, parts: &[&[u8]], icv: &mut [u8]) {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(part);
        }
        let tag = ctx.sign();
        icv.copy_from_slice(&tag.as_ref()[..self.alg.icv_len()]);
    }

    /// Whether `icv` is the truncated ICV over the parts, compared in
    /// constant time.
    pub fn verify(&self, parts: &[&[u8]], icv: &[u8]) -> bool {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(part);
        }
        let tag = ctx.sign();
        icv.len() == self.alg.icv_len() && constant_time_eq(&tag.as_ref()[..icv.len()], icv)
    }
}
