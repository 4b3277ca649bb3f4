//! Userspace ESP (RFC 4303): one direction of a Child SA, sealing inner
//! packets into ESP and opening them again, with the anti-replay window and
//! extended sequence numbers.
//!
//! The receive path checks the sequence number against the replay window
//! before spending any cryptography on the packet, and marks it in the
//! window only after the packet authenticated, so forged packets cannot
//! move the window (the order boringtun uses). Neither direction allocates:
//! `seal` writes into a buffer the caller reuses, `open` decrypts in place.

use rand_core::{RngCore, SeedableRng};
use sixgate_proto::crypto::{CipherKey, Encryption, EspKeys, IntegrityKey};
use sixgate_proto::wire::{EspHeader, EspTrailer};

/// Why an ESP packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspError {
    /// Shorter than header, IV and ICV.
    Truncated,
    /// Outside the replay window, or seen before.
    Replayed,
    /// The ICV or tag did not verify.
    Authentication,
    /// Decrypted, but the padding or trailer is malformed.
    Malformed,
    /// The 2^32 (or 2^64 with ESN) sequence numbers are used up: rekey.
    SequenceExhausted,
}

/// Per-SA counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets sealed or opened.
    pub packets: u64,
    /// Inner octets sealed or opened.
    pub bytes: u64,
    /// Packets refused as replays.
    pub replayed: u64,
    /// Packets refused as forgeries.
    pub auth_failed: u64,
    /// Packets that opened but carried what the SA may not: not IPv6, or
    /// from or to addresses outside its traffic selectors.
    pub spoofed: u64,
}

/// The anti-replay window (RFC 4303 3.4.3 and Appendix A), over 64-bit
/// sequence numbers.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number authenticated so far (0: none).
    top: u64,
    bits: [u64; Self::WORDS],
}

impl ReplayWindow {
    const WORDS: usize = 16;
    /// The window size in packets.
    pub const SIZE: u64 = 64 * Self::WORDS as u64;

    /// An empty window.
    pub fn new() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; Self::WORDS],
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % Self::SIZE;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// The full sequence number for a received low half (RFC 4303 A2.2):
    /// the candidate closest to the window.
    pub fn infer(&self, low: u32, esn: bool) -> u64 {
        if !esn {
            return u64::from(low);
        }
        let top_low = self.top as u32;
        let top_high = (self.top >> 32) as u32;
        let bottom_low = top_low.wrapping_sub(Self::SIZE as u32 - 1);
        let high = if top_low >= Self::SIZE as u32 - 1 {
            // The window lies within one 2^32 subspace.
            if low >= bottom_low {
                top_high
            } else {
                top_high.wrapping_add(1)
            }
        } else if low >= bottom_low {
            // The window spans two subspaces; this is in the lower one.
            top_high.wrapping_sub(1)
        } else {
            top_high
        };
        (u64::from(high) << 32) | u64::from(low)
    }

    /// Whether `seq` may be accepted (not too old, not seen).
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        if self.top - seq >= Self::SIZE {
            return false;
        }
        let (w, b) = Self::bit(seq);
        self.bits[w] & b == 0
    }

    /// Records `seq` as received (call only after authentication).
    pub fn mark(&mut self, seq: u64) {
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= Self::SIZE {
                self.bits = [0; Self::WORDS];
            } else {
                for s in self.top + 1..seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq;
        }
        let (w, b) = Self::bit(seq);
        self.bits[w] |= b;
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// One direction of an ESP SA.
pub struct EspSa {
    /// The SPI in the packets (the receiver's).
    pub spi: u32,
    encr: Encryption,
    cipher: CipherKey,
    integ: Option<IntegrityKey>,
    esn: bool,
    /// Outbound: the last sequence number used.
    seq: u64,
    window: ReplayWindow,
    /// Unpredictable IVs for CBC, from a generator seeded once.
    iv_rng: rand_chacha::ChaCha12Rng,
    /// Counters.
    pub counters: Counters,
}

impl std::fmt::Debug for EspSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspSa")
            .field("spi", &format_args!("{:08x}", self.spi))
            .field("encr", &self.encr)
            .field("esn", &self.esn)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl EspSa {
    /// The highest sequence number authenticated so far (0: none).
    pub fn highest_received(&self) -> u64 {
        self.window.top
    }

    /// An SA for `spi` with the keys of its direction.
    pub fn new(spi: u32, keys: &EspKeys, esn: bool) -> Option<EspSa> {
        let (encr, cipher, integ) = keys.prepare()?;
        Some(EspSa {
            spi,
            encr,
            cipher,
            integ,
            esn,
            seq: 0,
            window: ReplayWindow::new(),
            iv_rng: rand_chacha::ChaCha12Rng::from_rng(rand_core::OsRng).ok()?,
            counters: Counters::default(),
        })
    }

    fn icv_len(&self) -> usize {
        self.encr.tag_len() + self.integ.as_ref().map_or(0, |k| k.algorithm().icv_len())
    }

    /// Octets ESP adds around an inner packet of `len` octets, at most.
    pub fn overhead(&self) -> usize {
        EspHeader::LEN + self.encr.iv_len() + self.encr.block_len().max(4) + 2 + self.icv_len()
    }

    /// Seals `inner` (an IP packet whose protocol is `next_header`) into
    /// `out`, which is cleared first and keeps its capacity.
    pub fn seal(
        &mut self,
        inner: &[u8],
        next_header: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), EspError> {
        out.clear();
        self.seal_appending(next_header, out, |o| o.extend_from_slice(inner))
    }

    /// Appends one ESP packet to `out`, its inner packet (whose protocol
    /// is `next_header`) appended in its place by `write_inner`: several
    /// packets sealed back to back for one UDP GSO send, each inner
    /// packet written once, where it is encrypted.
    pub fn seal_appending(
        &mut self,
        next_header: u8,
        out: &mut Vec<u8>,
        write_inner: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), EspError> {
        let limit = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if self.seq >= limit {
            return Err(EspError::SequenceExhausted);
        }
        self.seq += 1;
        let seq = self.seq;
        let iv_len = self.encr.iv_len();
        let icv_len = self.icv_len();
        let start = out.len();
        out.extend_from_slice(&self.spi.to_be_bytes());
        out.extend_from_slice(&(seq as u32).to_be_bytes());
        match self.encr {
            // RFC 4106 8.1 / RFC 7634 2: the sequence number is a fine,
            // never-repeating explicit IV for the AEADs.
            Encryption::AesGcm16 { .. } | Encryption::ChaCha20Poly1305 => {
                out.extend_from_slice(&seq.to_be_bytes())
            }
            Encryption::AesCbc { .. } => {
                let at = out.len();
                out.resize(at + iv_len, 0);
                self.iv_rng.fill_bytes(&mut out[at..]);
            }
        }
        let body = out.len();
        write_inner(out);
        let inner_len = out.len() - body;
        let block = self.encr.block_len();
        EspTrailer::append(out, body, next_header, block);
        let ct_end = out.len();
        out.resize(ct_end + icv_len, 0);
        let aad = aad(self.spi, seq, self.esn);
        let packet = &mut out[start..];
        let (body, ct_end) = (body - start, ct_end - start);
        let (head, tail) = packet.split_at_mut(body);
        let (ct, icv) = tail.split_at_mut(ct_end - body);
        let iv = &head[EspHeader::LEN..];
        self.cipher
            .seal(iv, aad.as_slice(), ct, &mut icv[..self.encr.tag_len()])
            .map_err(|_| EspError::Malformed)?;
        if let Some(integ) = &self.integ {
            let (covered, icv) = packet.split_at_mut(ct_end);
            let hi = ((seq >> 32) as u32).to_be_bytes();
            let parts: &[&[u8]] = if self.esn {
                &[covered, &hi]
            } else {
                &[covered]
            };
            integ.sign_into(parts, icv);
        }
        self.counters.packets += 1;
        self.counters.bytes += inner_len as u64;
        Ok(())
    }

    /// Opens an ESP packet in place; returns the inner packet and its
    /// protocol.
    pub fn open<'a>(&mut self, packet: &'a mut [u8]) -> Result<(&'a [u8], u8), EspError> {
        let iv_len = self.encr.iv_len();
        let icv_len = self.icv_len();
        if packet.len() < EspHeader::LEN + iv_len + icv_len + 2 {
            return Err(EspError::Truncated);
        }
        let header = EspHeader::parse(packet).map_err(|_| EspError::Truncated)?;
        let seq = self.window.infer(header.seq, self.esn);
        if !self.window.check(seq) {
            self.counters.replayed += 1;
            return Err(EspError::Replayed);
        }
        let ct_end = packet.len() - icv_len;
        if let Some(integ) = &self.integ {
            let (covered, icv) = packet.split_at(ct_end);
            let hi = ((seq >> 32) as u32).to_be_bytes();
            let parts: &[&[u8]] = if self.esn {
                &[covered, &hi]
            } else {
                &[covered]
            };
            if !integ.verify(parts, icv) {
                self.counters.auth_failed += 1;
                return Err(EspError::Authentication);
            }
        }
        let block = self.encr.block_len();
        let body = EspHeader::LEN + iv_len;
        if !(ct_end - body).is_multiple_of(block) {
            return Err(EspError::Malformed);
        }
        let aad = aad(self.spi, seq, self.esn);
        let (head, tail) = packet.split_at_mut(body);
        let (ct, icv) = tail.split_at_mut(ct_end - body);
        let iv = &head[EspHeader::LEN..];
        let tag = &icv[..self.encr.tag_len()];
        if self.cipher.open(iv, aad.as_slice(), ct, tag).is_err() {
            self.counters.auth_failed += 1;
            return Err(EspError::Authentication);
        }
        // Authenticated: now it counts.
        self.window.mark(seq);
        let (inner, trailer) = EspTrailer::split(ct).map_err(|_| EspError::Malformed)?;
        self.counters.packets += 1;
        self.counters.bytes += inner.len() as u64;
        Ok((inner, trailer.next_header))
    }
}

/// The AEAD associated data: SPI and sequence number (RFC 4106 5, with the
/// high half first under ESN).
struct Aad {
    bytes: [u8; 12],
    len: usize,
}

impl Aad {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn aad(spi: u32, seq: u64, esn: bool) -> Aad {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        bytes[4..12].copy_from_slice(&seq.to_be_bytes());
        Aad { bytes, len: 12 }
    } else {
        bytes[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        Aad { bytes, len: 8 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_for_every_algorithm_with_and_without_esn() {
        for keys in crate::fuzzing::every_algorithm() {
            for esn in [false, true] {
                let mut tx = EspSa::new(0x1234, &keys, esn).unwrap();
                let mut rx = EspSa::new(0x1234, &keys, esn).unwrap();
                let mut buf = Vec::with_capacity(2048);
                for len in [0usize, 1, 40, 1280, 1400] {
                    let inner: Vec<u8> = (0..len).map(|i| i as u8).collect();
                    tx.seal(&inner, 41, &mut buf).unwrap();
                    assert!(buf.len() <= len + tx.overhead(), "{keys:?}");
                    let (got, nh) = rx.open(&mut buf).unwrap();
                    assert_eq!((got, nh), (&inner[..], 41), "{keys:?} esn={esn}");
                }
                assert_eq!(rx.counters.packets, 5);
            }
        }
    }

    #[test]
    fn replays_forgeries_and_wrong_keys_are_refused() {
        for keys in crate::fuzzing::every_algorithm() {
            let mut tx = EspSa::new(7, &keys, false).unwrap();
            let mut rx = EspSa::new(7, &keys, false).unwrap();
            let mut buf = Vec::new();
            tx.seal(b"hello", 41, &mut buf).unwrap();
            let copy = buf.clone();
            rx.open(&mut buf).unwrap();
            let mut again = copy.clone();
            assert_eq!(rx.open(&mut again).unwrap_err(), EspError::Replayed);
            // A forgery with a fresh sequence number does not move the window.
            let mut forged = copy.clone();
            forged[4..8].copy_from_slice(&5u32.to_be_bytes());
            assert_eq!(rx.open(&mut forged).unwrap_err(), EspError::Authentication);
            for _ in 0..4 {
                tx.seal(b"x", 41, &mut buf).unwrap();
            }
            tx.seal(b"fifth", 41, &mut buf).unwrap();
            assert_eq!(
                rx.open(&mut buf).unwrap().0,
                b"fifth",
                "seq 6 after a forged 5"
            );
            let mut last = copy.clone();
            let n = last.len() - 1;
            last[n] ^= 1;
            assert!(rx.open(&mut last).is_err());
            assert_eq!(rx.counters.auth_failed, 1);
        }
    }

    #[test]
    fn window_accepts_reordering_within_its_size_only() {
        let mut w = ReplayWindow::new();
        assert!(!w.check(0));
        w.mark(5000);
        assert!(w.check(4999) && w.check(5000 - ReplayWindow::SIZE + 1));
        assert!(!w.check(5000 - ReplayWindow::SIZE));
        assert!(!w.check(5000));
        w.mark(4999);
        assert!(!w.check(4999));
        w.mark(5000 + 3 * ReplayWindow::SIZE);
        assert!(!w.check(5000 + 2 * ReplayWindow::SIZE));
        assert!(w.check(5000 + 3 * ReplayWindow::SIZE - 1));
    }

    #[test]
    fn esn_inference_across_the_32_bit_boundary() {
        let mut w = ReplayWindow::new();
        let near = (1u64 << 32) - 10;
        w.mark(near);
        assert_eq!(w.infer(u32::MAX, true), (1 << 32) - 1);
        assert_eq!(
            w.infer(3, true),
            (1 << 32) + 3,
            "wrapped into the next subspace"
        );
        w.mark((1 << 32) + 3);
        assert_eq!(
            w.infer(u32::MAX - 2, true),
            (1 << 32) - 3,
            "late packet from the previous subspace"
        );
        assert_eq!(w.infer(10, true), (1 << 32) + 10);
        assert_eq!(w.infer(10, false), 10);

        // End to end: a sender past 2^32 packets with ESN.
        let keys = &crate::fuzzing::every_algorithm()[0];
        let mut tx = EspSa::new(9, keys, true).unwrap();
        let mut rx = EspSa::new(9, keys, true).unwrap();
        tx.seq = (1 << 32) - 2;
        rx.window.mark((1 << 32) - 3);
        let mut buf = Vec::new();
        for i in 0..5u8 {
            tx.seal(&[i], 41, &mut buf).unwrap();
            assert_eq!(rx.open(&mut buf).unwrap().0, &[i]);
        }
        // Without ESN the sequence number may not wrap.
        let mut tx = EspSa::new(9, keys, false).unwrap();
        tx.seq = u64::from(u32::MAX);
        assert_eq!(
            tx.seal(b"x", 41, &mut buf),
            Err(EspError::SequenceExhausted)
        );
    }

    #[test]
    fn truncated_and_garbage_packets_are_refused() {
        let mut rx = EspSa::new(7, &crate::fuzzing::every_algorithm()[3], false).unwrap();
        for len in 0..80 {
            let mut p: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            if len >= 8 {
                p[..4].copy_from_slice(&7u32.to_be_bytes());
                p[4..8].copy_from_slice(&1u32.to_be_bytes());
            }
            assert!(rx.open(&mut p).is_err());
        }
    }
}
