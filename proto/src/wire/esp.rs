//! The ESP header and trailer (RFC 4303) and the demultiplexing of UDP port
//! 4500 into IKE, ESP and NAT keepalives (RFC 3948).

use crate::codec::Reader;
use crate::error::InvalidMessage;

/// The four zero octets that precede an IKE message on port 4500, where an
/// ESP packet would have its (never zero) SPI.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// What a datagram on UDP port 4500 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Udp4500<'a> {
    /// An IKE message, marker removed.
    Ike(&'a [u8]),
    /// An ESP packet, starting with its SPI.
    Esp(&'a [u8]),
    /// A NAT keepalive (a single 0xFF octet).
    NatKeepalive,
}

/// Sorts a datagram received on port 4500.
pub fn classify_udp4500(datagram: &[u8]) -> Result<Udp4500<'_>, InvalidMessage> {
    match datagram {
        [0xff] => Ok(Udp4500::NatKeepalive),
        [0, 0, 0, 0, ike @ ..] => Ok(Udp4500::Ike(ike)),
        // SPI, sequence number and at least some payload.
        esp if esp.len() > EspHeader::LEN => Ok(Udp4500::Esp(esp)),
        _ => Err(InvalidMessage::Truncated("UDP-encapsulated packet")),
    }
}

/// The cleartext ESP header: SPI and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspHeader {
    /// The receiver's SPI; never zero (zero is the non-ESP marker).
    pub spi: u32,
    /// The low 32 bits of the sequence number.
    pub seq: u32,
}

impl EspHeader {
    /// Its length on the wire.
    pub const LEN: usize = 8;

    /// Reads the header of an ESP packet.
    pub fn parse(packet: &[u8]) -> Result<EspHeader, InvalidMessage> {
        let mut r = Reader::new(packet, "ESP header");
        let spi = r.u32()?;
        if spi == 0 {
            return Err(InvalidMessage::InvalidValue("ESP SPI"));
        }
        Ok(EspHeader { spi, seq: r.u32()? })
    }

    /// Writes the header into the first eight bytes of `out`.
    pub fn write(&self, out: &mut [u8; 8]) {
        out[..4].copy_from_slice(&self.spi.to_be_bytes());
        out[4..].copy_from_slice(&self.seq.to_be_bytes());
    }
}

/// The ESP trailer that ends the decrypted payload: padding, its length,
/// and the protocol of the inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspTrailer {
    /// How many padding octets precede the pad length octet.
    pub pad_len: u8,
    /// The inner protocol (41 for IPv6, 4 for IPv4, 59 for a dummy packet).
    pub next_header: u8,
}

impl EspTrailer {
    /// Splits a decrypted ESP payload into the inner packet and the trailer.
    /// The padding must be the default 1, 2, 3, ... sequence (RFC 4303
    /// 2.4): anything else means a wrong key or a forged packet.
    pub fn split(plaintext: &[u8]) -> Result<(&[u8], EspTrailer), InvalidMessage> {
        let [rest @ .., pad_len, next_header] = plaintext else {
            return Err(InvalidMessage::Truncated("ESP trailer"));
        };
        let inner_len = rest
            .len()
            .checked_sub(usize::from(*pad_len))
            .ok_or(InvalidMessage::BadLength("ESP padding"))?;
        let (inner, padding) = rest.split_at(inner_len);
        if !padding.iter().zip(1u8..).all(|(&p, want)| p == want) {
            return Err(InvalidMessage::InvalidValue("ESP padding"));
        }
        Ok((
            inner,
            EspTrailer {
                pad_len: *pad_len,
                next_header: *next_header,
            },
        ))
    }

    /// Appends padding and trailer to `buf`, whose payload starts at
    /// `start`, so the payload's length becomes a multiple of `block` (at
    /// least 4, as ESP requires 32-bit alignment).
    pub fn append(buf: &mut Vec<u8>, start: usize, next_header: u8, block: usize) {
        let block = block.max(4);
        let len = buf.len().saturating_sub(start);
        let pad = (block - (len + 2) % block) % block;
        buf.extend((1..=pad).map(|i| i as u8));
        buf.push(pad as u8);
        buf.push(next_header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_4500_demultiplexing() {
        assert_eq!(classify_udp4500(&[0xff]), Ok(Udp4500::NatKeepalive));
        assert_eq!(
            classify_udp4500(&[0, 0, 0, 0, 1, 2]),
            Ok(Udp4500::Ike(&[1, 2]))
        );
        let esp = [0, 0, 0, 1, 0, 0, 0, 1, 0xaa];
        assert_eq!(classify_udp4500(&esp), Ok(Udp4500::Esp(&esp)));
        assert!(classify_udp4500(&[0, 0, 1]).is_err());
        assert!(classify_udp4500(&[]).is_err());
    }

    #[test]
    fn trailer_round_trip_and_padding_check() {
        for len in 0..40 {
            let mut p: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            EspTrailer::append(&mut p, 0, 41, 16);
            assert_eq!(p.len() % 16, 0);
            let (inner, t) = EspTrailer::split(&p).unwrap();
            assert_eq!(inner.len(), len);
            assert_eq!(t.next_header, 41);
        }
        assert!(EspTrailer::split(&[1, 9, 2, 41]).is_err());
        assert!(EspTrailer::split(&[5, 41]).is_err());
        assert!(EspTrailer::split(&[41]).is_err());
    }

    #[test]
    fn zero_spi_is_not_esp() {
        assert!(EspHeader::parse(&[0; 8]).is_err());
        let h = EspHeader::parse(&[0, 0, 0x10, 0, 0, 0, 0, 7]).unwrap();
        assert_eq!((h.spi, h.seq), (0x1000, 7));
    }
}
