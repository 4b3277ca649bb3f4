//! NAT detection (RFC 7296 2.23): each side hashes the addresses it sees
//! with the SPIs, and a mismatch on the other side reveals a translation.

use std::net::{IpAddr, SocketAddr};

use ring::digest;

/// What the NAT_DETECTION payloads of one message revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NatDetection {
    /// The sender's address was translated (or it pretends so, to have ESP
    /// in UDP): its mapping may change under it, and we follow it.
    pub(crate) peer_behind: bool,
    /// Our address was translated on the way.
    pub(crate) we_behind: bool,
}

impl NatDetection {
    /// Whether any translation was seen: ESP goes in UDP.
    pub(crate) fn any(self) -> bool {
        self.peer_behind || self.we_behind
    }
}

/// SHA-1(SPIi | SPIr | IP | Port), the value of NAT_DETECTION_*_IP.
pub(crate) fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_spis_address_and_port() {
        let a: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:4500".parse().unwrap();
        assert_eq!(nat_hash(1, 2, a).len(), 20);
        assert_ne!(nat_hash(1, 2, a), nat_hash(1, 2, b));
        assert_ne!(nat_hash(1, 2, a), nat_hash(1, 3, a));
        assert_eq!(nat_hash(1, 2, a), nat_hash(1, 2, a));
    }
}
