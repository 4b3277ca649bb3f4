//! Key exchange methods: X25519 (RFC 8031), the NIST curves in IKE's
//! x-and-y encoding (RFC 5903), and the MODP groups of RFC 3526 (with
//! RFC 2409's 1024-bit group for legacy peers).
//!
//! The private value is always drawn from the caller's random generator as
//! plain bytes, so a seeded generator reproduces an exchange exactly and the
//! RFC test vectors can be fed in directly. Every public value received is
//! validated before use: points must lie on the curve, MODP values must
//! satisfy 1 < y < p-1 (RFC 6989), and an all-zero X25519 result (a
//! low-order point) is refused.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Uint, U1024, U2048, U3072, U512};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::Legacy;
use crate::error::PeerMisbehaved;
use crate::wire::{ke_id, TransformId};

/// A negotiated key exchange method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeGroup {
    /// Curve25519 (31).
    Curve25519,
    /// 256-bit random ECP group (19).
    Ecp256,
    /// 384-bit random ECP group (20).
    Ecp384,
    /// 2048-bit MODP group (14).
    Modp2048,
    /// 3072-bit MODP group (15).
    Modp3072,
    /// 1024-bit MODP group (2), legacy only.
    Modp1024,
}

// RFC 3526 section 3 and 4, RFC 2409 section 6.2: p = 2^n - 2^(n-64) - 1 +
// 2^64 * (floor(2^(n-130) pi) + k). Generator 2.
const MODP_1024: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF";
const MODP_2048: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";
const MODP_3072: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF";

/// How many bits of private exponent a MODP exchange uses: well above twice
/// the groups' security strength (RFC 3526 5), at a quarter of the cost of
/// a full-length exponent.
const MODP_EXPONENT_BITS: usize = 512;

impl KeGroup {
    /// The method a transform ID names, if implemented and allowed.
    pub fn from_id(id: TransformId, legacy: Legacy) -> Option<KeGroup> {
        match id {
            ke_id::CURVE25519 => Some(KeGroup::Curve25519),
            ke_id::ECP_256 => Some(KeGroup::Ecp256),
            ke_id::ECP_384 => Some(KeGroup::Ecp384),
            ke_id::MODP_2048 => Some(KeGroup::Modp2048),
            ke_id::MODP_3072 => Some(KeGroup::Modp3072),
            ke_id::MODP_1024 if legacy == Legacy::Allow => Some(KeGroup::Modp1024),
            _ => None,
        }
    }

    /// The transform ID.
    pub fn id(self) -> TransformId {
        match self {
            KeGroup::Curve25519 => ke_id::CURVE25519,
            KeGroup::Ecp256 => ke_id::ECP_256,
            KeGroup::Ecp384 => ke_id::ECP_384,
            KeGroup::Modp2048 => ke_id::MODP_2048,
            KeGroup::Modp3072 => ke_id::MODP_3072,
            KeGroup::Modp1024 => ke_id::MODP_1024,
        }
    }

    /// What one exchange costs the responder (key generation, public
    /// value, agreement), in microseconds as `cargo bench -p sixgate-proto
    /// -- generate` measured them on the development machine: only the
    /// order matters, to find the cheapest of several groups.
    pub fn cost(self) -> u32 {
        match self {
            KeGroup::Curve25519 => 115,
            KeGroup::Ecp256 => 440,
            KeGroup::Modp1024 => 1_500,
            KeGroup::Ecp384 => 1_900,
            KeGroup::Modp2048 => 5_700,
            KeGroup::Modp3072 => 12_800,
        }
    }

    /// Whether this is an elliptic-curve method.
    pub fn is_ecc(self) -> bool {
        matches!(
            self,
            KeGroup::Curve25519 | KeGroup::Ecp256 | KeGroup::Ecp384
        )
    }

    /// Length of the public value in the KE payload.
    pub fn public_len(self) -> usize {
        match self {
            KeGroup::Curve25519 => 32,
            KeGroup::Ecp256 => 64,
            KeGroup::Ecp384 => 96,
            KeGroup::Modp1024 => 128,
            KeGroup::Modp2048 => 256,
            KeGroup::Modp3072 => 384,
        }
    }

    /// Length of the private value `KeyExchangeSecret::from_private` takes.
    pub fn private_len(self) -> usize {
        match self {
            KeGroup::Curve25519 | KeGroup::Ecp256 => 32,
            KeGroup::Ecp384 => 48,
            KeGroup::Modp1024 | KeGroup::Modp2048 | KeGroup::Modp3072 => MODP_EXPONENT_BITS / 8,
        }
    }

    /// The prime of a MODP group.
    pub fn modp_prime(self) -> Option<Vec<u8>> {
        let hex = match self {
            KeGroup::Modp1024 => MODP_1024,
            KeGroup::Modp2048 => MODP_2048,
            KeGroup::Modp3072 => MODP_3072,
            _ => return None,
        };
        Some(decode_hex(hex))
    }
}

fn decode_hex(s: &str) -> Vec<u8> {
    let digit = |c: u8| (c as char).to_digit(16).map_or(0, |d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| digit(p[0]) << 4 | digit(p[1]))
        .collect()
}

/// Our half of a key exchange: the private value, wiped on drop.
pub struct KeyExchangeSecret {
    group: KeGroup,
    private: Private,
}

enum Private {
    X25519(x25519_dalek::StaticSecret),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    Modp(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for KeyExchangeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyExchangeSecret")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KeyExchangeSecret {
    /// A fresh private value for `group`.
    pub fn generate(group: KeGroup, rng: &mut dyn CryptoRngCore) -> KeyExchangeSecret {
        loop {
            let mut bytes = Zeroizing::new(vec![0u8; group.private_len()]);
            rng.fill_bytes(&mut bytes);
            // Only a scalar of zero or one at or above the curve order is
            // refused, with odds of about 2^-128: draw again.
            if let Some(secret) = Self::from_private(group, &bytes) {
                return secret;
            }
        }
    }

    /// The private value given as bytes: an X25519 scalar, a big-endian
    /// curve scalar, or a big-endian MODP exponent of `private_len()` octets.
    pub fn from_private(group: KeGroup, bytes: &[u8]) -> Option<KeyExchangeSecret> {
        if bytes.len() != group.private_len() {
            return None;
        }
        let private = match group {
            KeGroup::Curve25519 => {
                let scalar: [u8; 32] = bytes.try_into().ok()?;
                Private::X25519(x25519_dalek::StaticSecret::from(scalar))
            }
            KeGroup::Ecp256 => Private::P256(p256::SecretKey::from_slice(bytes).ok()?),
            KeGroup::Ecp384 => Private::P384(p384::SecretKey::from_slice(bytes).ok()?),
            KeGroup::Modp1024 | KeGroup::Modp2048 | KeGroup::Modp3072 => {
                Private::Modp(Zeroizing::new(bytes.to_vec()))
            }
        };
        Some(KeyExchangeSecret { group, private })
    }

    /// The group.
    pub fn group(&self) -> KeGroup {
        self.group
    }

    /// The public value for the KE payload.
    pub fn public_value(&self) -> Vec<u8> {
        match &self.private {
            Private::X25519(s) => x25519_dalek::PublicKey::from(s).as_bytes().to_vec(),
            Private::P256(s) => untagged_point(s.public_key().to_sec1_bytes().as_ref()),
            Private::P384(s) => untagged_point(s.public_key().to_sec1_bytes().as_ref()),
            Private::Modp(x) => self.modp(&[2], x).unwrap_or_default().to_vec(),
        }
    }

    /// The shared secret g^ir with the peer's public value.
    pub fn agree(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, PeerMisbehaved> {
        let invalid = PeerMisbehaved::InvalidPublicValue(self.group.id());
        if peer.len() != self.group.public_len() {
            return Err(invalid);
        }
        match &self.private {
            Private::X25519(s) => {
                let peer: [u8; 32] = peer.try_into().map_err(|_| invalid.clone())?;
                let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
                if !shared.was_contributory() {
                    return Err(invalid);
                }
                Ok(Zeroizing::new(shared.as_bytes().to_vec()))
            }
            Private::P256(s) => {
                let point =
                    p256::PublicKey::from_sec1_bytes(&tagged_point(peer)).map_err(|_| invalid)?;
                let shared = p256::ecdh::diffie_hellman(s.to_nonzero_scalar(), point.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            Private::P384(s) => {
                let point =
                    p384::PublicKey::from_sec1_bytes(&tagged_point(peer)).map_err(|_| invalid)?;
                let shared = p384::ecdh::diffie_hellman(s.to_nonzero_scalar(), point.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            Private::Modp(x) => self.modp(peer, x).ok_or(invalid),
        }
    }

    /// base^x mod p, or `None` if `base` is not in 1 < base < p-1.
    fn modp(&self, base: &[u8], x: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let p = self.group.modp_prime()?;
        match self.group {
            KeGroup::Modp1024 => modp_pow::<{ U1024::LIMBS }>(&p, base, x),
            KeGroup::Modp2048 => modp_pow::<{ U2048::LIMBS }>(&p, base, x),
            _ => modp_pow::<{ U3072::LIMBS }>(&p, base, x),
        }
    }
}

/// base^exp mod p for a `LIMBS`-sized prime given big-endian; `base` may be
/// shorter than p. Refuses base outside 1 < base < p-1.
fn modp_pow<const LIMBS: usize>(p: &[u8], base: &[u8], exp: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let width = LIMBS * crypto_bigint::Limb::BYTES;
    if p.len() != width || base.len() > width || exp.len() != U512::BYTES {
        return None;
    }
    let mut padded = vec![0u8; width];
    padded[width - base.len()..].copy_from_slice(base);
    let p = Uint::<LIMBS>::from_be_slice(p);
    let y = Uint::<LIMBS>::from_be_slice(&padded);
    let p_minus_1 = p.wrapping_sub(&Uint::ONE);
    if y <= Uint::ONE || y >= p_minus_1 {
        return None;
    }
    let exp = Zeroizing::new(U512::from_be_slice(exp));
    let params = DynResidueParams::new(&p);
    let result = DynResidue::new(&y, params)
        .pow_bounded_exp(&*exp, MODP_EXPONENT_BITS)
        .retrieve();
    let mut out = Zeroizing::new(Vec::with_capacity(width));
    for word in result.as_words().iter().rev() {
        out.extend_from_slice(&word.to_be_bytes());
    }
    Some(out)
}

/// IKE carries curve points as x | y (RFC 5903 7); SEC1 prefixes 0x04.
fn tagged_point(xy: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(xy.len() + 1);
    v.push(0x04);
    v.extend_from_slice(xy);
    v
}

fn untagged_point(sec1: &[u8]) -> Vec<u8> {
    sec1.get(1..).unwrap_or_default().to_vec()
}
