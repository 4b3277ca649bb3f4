//! The algorithms IKEv2 and ESP negotiate, and the key derivations that tie
//! them to an exchange.
//!
//! Each negotiable algorithm family is a small enum built from the transform
//! that names it ([`Prf`], [`Integrity`], [`Encryption`], [`KeGroup`]), so a
//! transform we do not implement simply yields `None` and is never chosen.
//! SHA-1 and MODP-1024 exist only for peers that offer nothing better
//! (Windows' built-in client), and only when the caller passes
//! [`Legacy::Allow`].
//!
//! Secrets live in [`Zeroizing`](zeroize::Zeroizing) buffers or types that
//! wipe themselves on drop. Randomness always comes from the caller, as a
//! [`rand_core::CryptoRngCore`], so tests can run on a seeded generator.

mod encr;
mod integ;
mod ke;
mod keys;
mod names;
mod prf;
pub mod sk;

pub use encr::{CipherKey, Encryption};
pub use integ::{Integrity, IntegrityKey};
pub use ke::{KeGroup, KeyExchangeSecret};
pub use keys::{child_keymat, skeyseed, skeyseed_rekey, ChildSaKeys, EspKeys, IkeSaKeys, Suite};
pub use prf::Prf;

/// Whether SHA-1 and MODP-1024 may be negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Legacy {
    /// Only the modern algorithms (the default).
    #[default]
    Refuse,
    /// Also SHA-1 (PRF and HMAC-SHA1-96) and MODP-1024.
    Allow,
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
