//! The algorithms by the keywords of strongSwan's proposal syntax
//! (`aes128gcm16`, `sha256`, `prfsha256`, `curve25519`, ...), which
//! operators already know from swanctl.conf: how status and logs name
//! them, and how configured proposals are read.

use std::fmt;

use super::{Encryption, Integrity, KeGroup, Prf, Suite};

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::AesGcm16 { key_bits } => write!(f, "aes{key_bits}gcm16"),
            Encryption::ChaCha20Poly1305 => f.write_str("chacha20poly1305"),
            Encryption::AesCbc { key_bits } => write!(f, "aes{key_bits}"),
        }
    }
}

impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Integrity::HmacSha256_128 => "sha256",
            Integrity::HmacSha384_192 => "sha384",
            Integrity::HmacSha512_256 => "sha512",
            Integrity::HmacSha1_96 => "sha1",
        })
    }
}

impl fmt::Display for Prf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prf::HmacSha256 => "prfsha256",
            Prf::HmacSha384 => "prfsha384",
            Prf::HmacSha512 => "prfsha512",
            Prf::HmacSha1 => "prfsha1",
        })
    }
}

impl fmt::Display for KeGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeGroup::Curve25519 => "curve25519",
            KeGroup::Ecp256 => "ecp256",
            KeGroup::Ecp384 => "ecp384",
            KeGroup::Modp2048 => "modp2048",
            KeGroup::Modp3072 => "modp3072",
            KeGroup::Modp1024 => "modp1024",
        })
    }
}

impl fmt::Display for Suite {
    /// `aes128gcm16-prfsha256-curve25519`, or with the integrity algorithm
    /// after a non-AEAD cipher: `aes256-sha256-prfsha256-modp2048`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.encr)?;
        if let Some(i) = self.integ {
            write!(f, "-{i}")?;
        }
        write!(f, "-{}-{}", self.prf, self.ke)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_read_as_in_swanctl() {
        let s = Suite {
            encr: Encryption::AesCbc { key_bits: 256 },
            integ: Some(Integrity::HmacSha256_128),
            prf: Prf::HmacSha256,
            ke: KeGroup::Modp2048,
        };
        assert_eq!(s.to_string(), "aes256-sha256-prfsha256-modp2048");
        let g = Suite {
            encr: Encryption::AesGcm16 { key_bits: 128 },
            integ: None,
            prf: Prf::HmacSha256,
            ke: KeGroup::Curve25519,
        };
        assert_eq!(g.to_string(), "aes128gcm16-prfsha256-curve25519");
    }
}
