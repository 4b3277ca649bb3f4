//! What a Child SA may carry, as both data planes enforce it: IPv6 only,
//! from the peer's negotiated selectors to ours (RFC 4301 5.2: after
//! decryption a packet must match the SA it arrived on).
//!
//! Selectors are kept as address ranges. A Child SA whose selectors were
//! narrowed to a protocol or to ports is refused by both planes rather
//! than installed wider than negotiated: sixgate and the stock clients
//! never negotiate such SAs, and checking ports would mean walking IPv6
//! extension headers on every packet.

use std::io;
use std::net::Ipv6Addr;

use sixgate_proto::endpoint::ChildSa;
use sixgate_proto::wire::TrafficSelector;

/// IP protocol number of IPv6 inside ESP (RFC 2473 "next header").
pub const IPV6_NEXT_HEADER: u8 = 41;

/// An inclusive range of IPv6 addresses.
pub type Range = (Ipv6Addr, Ipv6Addr);

/// The address ranges of one side of a Child SA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<Range>);

impl From<Vec<Range>> for Ranges {
    fn from(ranges: Vec<Range>) -> Ranges {
        Ranges(ranges)
    }
}

impl Ranges {
    /// Whether `addr` falls in one of the ranges.
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        self.0.iter().any(|(lo, hi)| *lo <= addr && addr <= *hi)
    }

    /// The ranges.
    pub fn as_slice(&self) -> &[Range] {
        &self.0
    }
}

/// Both sides of a Child SA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// What the peer sends from (its selectors, our remote_ts).
    pub remote: Ranges,
    /// What the peer may send to (our local_ts).
    pub local: Ranges,
}

/// Why an opened packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerError {
    /// Not an IPv6 packet (another next header, or another version).
    NotIpv6,
    /// Shorter than an IPv6 header, or its payload length disagrees.
    Truncated,
    /// From an address outside the peer's selectors.
    Source,
    /// To an address outside our selectors.
    Destination,
}

fn ipv6_ranges(ts: &[TrafficSelector]) -> io::Result<Ranges> {
    let mut out = Vec::new();
    // IPv4 inside is never carried, and unknown selector types select
    // nothing we know: nothing of them may pass.
    for t in ts {
        if let TrafficSelector::Ipv6(r) = t {
            if r.ip_protocol != 0 || r.start_port != 0 || r.end_port != u16::MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "traffic selectors narrowed to a protocol or ports are not supported",
                ));
            }
            if r.start <= r.end {
                out.push((r.start, r.end));
            }
        }
    }
    Ok(Ranges(out))
}

impl Selectors {
    /// The selectors of a Child SA, or an error if they are narrowed to
    /// protocols or ports.
    pub fn of(child: &ChildSa) -> io::Result<Selectors> {
        Ok(Selectors {
            remote: ipv6_ranges(&child.remote_ts)?,
            local: ipv6_ranges(&child.local_ts)?,
        })
    }

    /// Checks a decrypted packet (`next_header` from the ESP trailer)
    /// against the SA: IPv6, whole, from the peer's selectors, to ours.
    pub fn check(&self, packet: &[u8], next_header: u8) -> Result<(), InnerError> {
        if next_header != IPV6_NEXT_HEADER {
            return Err(InnerError::NotIpv6);
        }
        let header: &[u8; 40] = packet
            .get(..40)
            .and_then(|h| h.try_into().ok())
            .ok_or(InnerError::Truncated)?;
        if header[0] >> 4 != 6 {
            return Err(InnerError::NotIpv6);
        }
        let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        // A jumbogram (length 0) cannot fit in ESP over UDP anyway.
        if 40 + payload_len != packet.len() {
            return Err(InnerError::Truncated);
        }
        let addr = |at: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&header[at..at + 16]);
            Ipv6Addr::from(a)
        };
        if !self.remote.contains(addr(8)) {
            return Err(InnerError::Source);
        }
        if !self.local.contains(addr(24)) {
            return Err(InnerError::Destination);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sixgate_proto::endpoint::ts::{ipv6_any, ipv6_host};

    fn packet(src: &str, dst: &str, payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
        p[6] = 58;
        p[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        p
    }

    fn broker_side() -> Selectors {
        Selectors {
            remote: ipv6_ranges(&[ipv6_host("2001:db8:100::100".parse().unwrap())]).unwrap(),
            local: ipv6_ranges(&[ipv6_any()]).unwrap(),
        }
    }

    #[test]
    fn only_ipv6_from_the_peers_selectors_passes() {
        let s = broker_side();
        let good = packet("2001:db8:100::100", "2001:db8:ffff::2", 16);
        assert_eq!(s.check(&good, 41), Ok(()));
        let spoofed = packet("2001:db8:dead::1", "2001:db8:ffff::2", 16);
        assert_eq!(s.check(&spoofed, 41), Err(InnerError::Source));
        assert_eq!(
            s.check(&good, 4),
            Err(InnerError::NotIpv6),
            "IPv4 next header"
        );
        let mut v4 = good.clone();
        v4[0] = 0x45;
        assert_eq!(s.check(&v4, 41), Err(InnerError::NotIpv6), "version 4");
        assert_eq!(s.check(&good[..39], 41), Err(InnerError::Truncated));
        assert_eq!(s.check(&good[..50], 41), Err(InnerError::Truncated));
        let narrow = Selectors {
            local: ipv6_ranges(&[ipv6_host("2001:db8:ffff::2".parse().unwrap())]).unwrap(),
            ..broker_side()
        };
        let elsewhere = packet("2001:db8:100::100", "2001:db8:ffff::3", 0);
        assert_eq!(narrow.check(&elsewhere, 41), Err(InnerError::Destination));
    }

    #[test]
    fn narrowed_selectors_are_refused_and_ipv4_ones_carry_nothing() {
        let mut tcp = ipv6_any();
        if let TrafficSelector::Ipv6(r) = &mut tcp {
            r.ip_protocol = 6;
        }
        assert!(ipv6_ranges(&[tcp]).is_err());
        let v4 = TrafficSelector::ipv4(
            "0.0.0.0".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
        );
        let r = ipv6_ranges(&[v4]).unwrap();
        assert!(!r.contains(Ipv6Addr::UNSPECIFIED));
    }
}
