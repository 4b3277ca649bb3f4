//! The body of the inbound-ESP fuzz target in `fuzz/`, kept here so that
//! its stored corpus also runs as an ordinary test (`tests/fuzz_corpus.rs`):
//! a datagram from the UDP-4500 socket through the userspace data plane's
//! receive step (classification, SPI, replay window, decryption, padding,
//! and the inner check against the SA's selectors). Panics only on a bug.

use std::net::Ipv6Addr;

use sixgate_proto::crypto::{EspKeys, Integrity};
use sixgate_proto::wire::{classify_udp4500, Udp4500};

use crate::esp::EspSa;
use crate::selectors::{Ranges, Selectors};
use crate::userspace::{esp_spi, Inbound};

/// One set of keys for each algorithm the userspace plane carries.
pub fn every_algorithm() -> Vec<EspKeys> {
    vec![
        EspKeys::AesGcm16 {
            key: vec![1; 16],
            salt: [2; 4],
        },
        EspKeys::AesGcm16 {
            key: vec![1; 32],
            salt: [2; 4],
        },
        EspKeys::ChaCha20Poly1305 {
            key: vec![3; 32],
            salt: [4; 4],
        },
        EspKeys::AesCbcHmac {
            enc_key: vec![5; 16],
            integ: Integrity::HmacSha256_128,
            auth_key: vec![6; 32],
        },
        EspKeys::AesCbcHmac {
            enc_key: vec![5; 32],
            integ: Integrity::HmacSha512_256,
            auth_key: vec![6; 64],
        },
    ]
}

const SPI: u32 = 0x5157_0001;
/// The road warrior's lease: the only source the SA lets in.
const PEER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x100);

fn inbound(keys: &EspKeys, esn: bool) -> Inbound {
    Inbound {
        sa: EspSa::new(SPI, keys, esn).expect("the example keys are valid"),
        selectors: Selectors {
            remote: Ranges::from(vec![(PEER, PEER)]),
            local: Ranges::from(vec![(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from(u128::MAX))]),
        },
    }
}

/// `data[0]` picks the algorithm, ESN, and one of two shapes. Raw: the
/// rest is a datagram as it arrives on port 4500 (it must not open, as
/// nobody has the key). Sealed: the rest is a next-header octet and an
/// inner packet that a peer holding the key seals; it must come out
/// unchanged exactly when it is IPv6 from the lease, and never twice.
pub fn inbound_esp(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let algorithms = every_algorithm();
    let keys = &algorithms[usize::from(mode & 0x0f) % algorithms.len()];
    let esn = mode & 0x10 != 0;
    let mut rx = inbound(keys, esn);
    if mode & 0x80 == 0 {
        let mut datagram = rest.to_vec();
        if let Ok(Udp4500::Esp(_)) = classify_udp4500(&datagram) {
            if esp_spi(&datagram) == Some(SPI) {
                assert!(rx.receive(&mut datagram).is_none(), "a forgery opened");
            }
        }
        return;
    }
    let Some((&next_header, inner)) = rest.split_first() else {
        return;
    };
    let mut tx = EspSa::new(SPI, keys, esn).expect("the example keys are valid");
    let mut sealed = Vec::new();
    if tx.seal(inner, next_header, &mut sealed).is_err() {
        return;
    }
    let allowed = rx.selectors.check(inner, next_header).is_ok();
    let mut again = sealed.clone();
    match rx.receive(&mut sealed) {
        Some(out) => {
            assert!(allowed, "a packet the selectors refuse came through");
            assert_eq!(out, inner, "the inner packet changed");
        }
        None => assert!(!allowed, "a packet the selectors allow was dropped"),
    }
    assert!(rx.receive(&mut again).is_none(), "a replay was let in");
    let c = rx.sa.counters;
    assert_eq!(
        (c.packets, c.replayed, c.spoofed),
        (1, 1, u64::from(!allowed)),
        "{c:?}"
    );
}
