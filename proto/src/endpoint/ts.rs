//! Traffic selector narrowing (RFC 7296 2.9) for the one shape sixgate
//! serves: a client with one virtual IPv6 address reaching anything.

use std::net::Ipv6Addr;

use crate::wire::{TrafficSelector, TsRange};

/// The full IPv6 range, all protocols and ports: what "::/0" offers.
pub fn ipv6_any() -> TrafficSelector {
    TrafficSelector::ipv6(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from(u128::MAX))
}

/// A single IPv6 address, all protocols and ports.
pub fn ipv6_host(addr: Ipv6Addr) -> TrafficSelector {
    TrafficSelector::ipv6(addr, addr)
}

/// Whether `outer` contains every packet `inner` does.
pub fn contains(outer: &TrafficSelector, inner: &TrafficSelector) -> bool {
    fn range<A: PartialOrd>(o: &TsRange<A>, i: &TsRange<A>) -> bool {
        (o.ip_protocol == 0 || o.ip_protocol == i.ip_protocol)
            && o.start_port <= i.start_port
            && i.end_port <= o.end_port
            && o.start <= i.start
            && i.end <= o.end
    }
    match (outer, inner) {
        (TrafficSelector::Ipv6(o), TrafficSelector::Ipv6(i)) => range(o, i),
        (TrafficSelector::Ipv4(o), TrafficSelector::Ipv4(i)) => range(o, i),
        _ => false,
    }
}

/// The intersection of what the peer proposed with what we allow, per
/// selector pair; empty when nothing overlaps.
pub fn narrow(proposed: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(ts) = intersect(p, a) {
                if !out.contains(&ts) {
                    out.push(ts);
                }
            }
        }
    }
    out
}

fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    fn range<A: Ord + Copy>(a: &TsRange<A>, b: &TsRange<A>) -> Option<TsRange<A>> {
        let ip_protocol = match (a.ip_protocol, b.ip_protocol) {
            (0, p) | (p, 0) => p,
            (p, q) if p == q => p,
            _ => return None,
        };
        let r = TsRange {
            ip_protocol,
            start_port: a.start_port.max(b.start_port),
            end_port: a.end_port.min(b.end_port),
            start: a.start.max(b.start),
            end: a.end.min(b.end),
        };
        (r.start_port <= r.end_port && r.start <= r.end).then_some(r)
    }
    match (a, b) {
        (TrafficSelector::Ipv6(x), TrafficSelector::Ipv6(y)) => {
            range(x, y).map(TrafficSelector::Ipv6)
        }
        (TrafficSelector::Ipv4(x), TrafficSelector::Ipv4(y)) => {
            range(x, y).map(TrafficSelector::Ipv4)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_to_a_host_and_containment() {
        let host = ipv6_host("2001:db8:100::100".parse().unwrap());
        assert_eq!(
            narrow(&[ipv6_any()], std::slice::from_ref(&host)),
            vec![host.clone()]
        );
        assert!(contains(&ipv6_any(), &host));
        assert!(!contains(&host, &ipv6_any()));
        let v4 = TrafficSelector::ipv4(
            "0.0.0.0".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
        );
        assert!(narrow(std::slice::from_ref(&v4), &[ipv6_any()]).is_empty());
        assert_eq!(
            narrow(&[v4.clone(), ipv6_any()], &[ipv6_any()]),
            vec![ipv6_any()]
        );
        let mut tcp = ipv6_any();
        if let TrafficSelector::Ipv6(r) = &mut tcp {
            r.ip_protocol = 6;
        }
        assert_eq!(narrow(&[tcp.clone()], &[ipv6_any()]), vec![tcp]);
    }
}
