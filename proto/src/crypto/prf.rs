//! Pseudorandom functions (RFC 7296 2.13, RFC 4868) and prf+.

use ring::hmac;
use zeroize::Zeroizing;

use super::Legacy;
use crate::wire::{prf_id, TransformId};

/// A negotiated PRF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256.
    HmacSha256,
    /// PRF_HMAC_SHA2_384.
    HmacSha384,
    /// PRF_HMAC_SHA2_512.
    HmacSha512,
    /// PRF_HMAC_SHA1, legacy only.
    HmacSha1,
}

impl Prf {
    /// The PRF a transform ID names, if implemented and allowed.
    pub fn from_id(id: TransformId, legacy: Legacy) -> Option<Prf> {
        match id {
            prf_id::HMAC_SHA2_256 => Some(Prf::HmacSha256),
            prf_id::HMAC_SHA2_384 => Some(Prf::HmacSha384),
            prf_id::HMAC_SHA2_512 => Some(Prf::HmacSha512),
            prf_id::HMAC_SHA1 if legacy == Legacy::Allow => Some(Prf::HmacSha1),
            _ => None,
        }
    }

    /// The transform ID.
    pub fn id(self) -> TransformId {
        match self {
            Prf::HmacSha256 => prf_id::HMAC_SHA2_256,
            Prf::HmacSha384 => prf_id::HMAC_SHA2_384,
            Prf::HmacSha512 => prf_id::HMAC_SHA2_512,
            Prf::HmacSha1 => prf_id::HMAC_SHA1,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Prf::HmacSha256 => hmac::HMAC_SHA256,
            Prf::HmacSha384 => hmac::HMAC_SHA384,
            Prf::HmacSha512 => hmac::HMAC_SHA512,
            Prf::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        }
    }

    /// Output length, which is also the length of SK_d, SK_pi and SK_pr
    /// (RFC 7296 2.13: the preferred key length of an HMAC PRF).
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
            Prf::HmacSha1 => 20,
        }
    }

    /// prf(key, data), where `data` is the concatenation of the parts.
    pub fn compute(self, key: &[u8], data: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for part in data {
            ctx.update(part);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }

    /// prf+(key, seed) truncated to `len` octets (RFC 7296 2.13):
    /// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
    ///
    /// # Panics
    /// If `len` needs more than 255 rounds, which no negotiated suite does.
    pub fn plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Zeroizing<Vec<u8>> {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut prev: Option<hmac::Tag> = None;
        let mut counter = 1u8;
        while out.len() < len {
            let mut ctx = hmac::Context::with_key(&key);
            if let Some(t) = &prev {
                ctx.update(t.as_ref());
            }
            for part in seed {
                ctx.update(part);
            }
            ctx.update(&[counter]);
            let t = ctx.sign();
            out.extend_from_slice(t.as_ref());
            prev = Some(t);
            counter = counter
                .checked_add(1)
                .expect("prf+ is defined for at most 255 blocks");
        }
        out.truncate(len);
        out
    }
}
