//! IKE SAs that move: a NAT's new mapping followed without a new IKE SA
//! (RFC 7296 2.23), MOBIKE's UPDATE_SA_ADDRESSES from an initiator whose
//! address changed (RFC 4555), and the moves that must not happen.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::lab::*;
use sixgate_proto::endpoint::{ChildSa, Event, SaId};

fn established(lab: &mut Lab) -> (SaId, SaId) {
    let ok = lab.run_until(Duration::from_secs(60), |lab| {
        lab.nodes
            .iter()
            .all(|n| n.events.iter().any(|e| matches!(e, Event::ChildSaUp(_))))
    });
    assert!(ok, "not established: {:?}", lab.nodes[1].events);
    (lab.ike_sa(0), lab.ike_sa(1))
}

/// The Child SAs of each PathChanged a node raised, with its addresses.
fn moves(events: &[Event]) -> Vec<(SaId, SocketAddr, SocketAddr, Vec<ChildSa>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PathChanged {
                sa,
                local,
                remote,
                children,
            } => Some((*sa, *local, *remote, children.clone())),
            _ => None,
        })
        .collect()
}

fn ups(events: &[Event]) -> usize {
    count(events, |e| matches!(e, Event::IkeSaUp { .. }))
}

fn downs(events: &[Event]) -> usize {
    count(events, |e| matches!(e, Event::IkeSaDown { .. }))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_nat_rebinding_is_followed_without_a_new_ike_sa() {
    let mut client = client_config("ecdsa");
    client.dpd_interval = Duration::from_secs(10);
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(40, client, broker_config("ecdsa"), &pool);
    lab.masquerade = Some(Masquerade {
        inside: ip(CLIENT),
        public: ip("198.51.100.7"),
        port_shift: 10000,
    });
    lab.connect();
    let (_, broker_sa) = established(&mut lab);
    let broker_child = lab.nodes[1]
        .events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaUp(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(broker_child.remote, "198.51.100.7:14500".parse().unwrap());
    assert!(broker_child.udp_encapsulation, "behind a NAT: ESP in UDP");

    // The DSL line reconnects: a new public address, new ports. The
    // client's next liveness check arrives from there, and the broker
    // answers it there.
    lab.masquerade = Some(Masquerade {
        inside: ip(CLIENT),
        public: ip("203.0.113.9"),
        port_shift: 20000,
    });
    let moved = lab.run_until(Duration::from_secs(30), |lab| {
        !moves(&lab.nodes[1].events).is_empty()
    });
    assert!(moved, "broker never followed: {:?}", lab.nodes[1].events);
    let (sa, _, remote, children) = moves(&lab.nodes[1].events).remove(0);
    assert_eq!(sa, broker_sa);
    assert_eq!(remote, "203.0.113.9:24500".parse().unwrap());
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].remote, remote);
    assert_eq!(children[0].inbound_spi, broker_child.inbound_spi);
    // It stays up across further checks in both directions.
    lab.run_for(Duration::from_secs(120));
    assert_eq!(
        (ups(&lab.nodes[0].events), downs(&lab.nodes[0].events)),
        (1, 0)
    );
    assert_eq!(
        (ups(&lab.nodes[1].events), downs(&lab.nodes[1].events)),
        (1, 0)
    );

    // An authenticated ESP packet from a newer mapping moves it too
    // (the data plane reports it).
    let newer: SocketAddr = "203.0.113.9:31000".parse().unwrap();
    let now = lab.now;
    lab.nodes[1].ep.esp_from(now, broker_sa, newer);
    lab.deliver();
    let last = moves(&lab.nodes[1].events).pop().unwrap();
    assert_eq!(last.2, newer);
    assert_eq!(lab.nodes[1].ep.stats().moves_refused, 0);
}

#[test]
fn a_peer_behind_no_nat_is_not_moved_by_a_packet() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(41, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    lab.connect();
    let (_, broker_sa) = established(&mut lab);
    // Whoever rewrote the source of an ESP packet does not get the
    // tunnel's traffic: without a NAT, the peer's address is fixed.
    let now = lab.now;
    lab.nodes[1]
        .ep
        .esp_from(now, broker_sa, "203.0.113.66:4500".parse().unwrap());
    lab.deliver();
    assert!(moves(&lab.nodes[1].events).is_empty());
    assert_eq!(lab.nodes[1].ep.stats().moves_refused, 1);
}

#[test]
fn mobike_moves_the_sa_to_the_initiators_new_address() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(42, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    lab.connect();
    let (client_sa, broker_sa) = established(&mut lab);
    // MOBIKE took IKE to the NAT-T port after IKE_SA_INIT, NAT or not.
    let before = lab.nodes[1].sent.last().unwrap().clone();
    assert_eq!(before.local.port(), 4500);
    assert_eq!(before.remote, "192.0.2.2:4500".parse().unwrap());

    // The laptop is on another network now.
    let new_ip = ip("192.0.2.77");
    lab.nodes[0].ip = new_ip;
    let now = lab.now;
    assert!(lab.nodes[0].ep.roam(now, client_sa, new_ip));
    let moved = lab.run_until(Duration::from_secs(10), |lab| {
        !moves(&lab.nodes[0].events).is_empty() && !moves(&lab.nodes[1].events).is_empty()
    });
    assert!(moved, "{:?}", lab.nodes[0].events);
    let (sa, local, remote, children) = moves(&lab.nodes[1].events).remove(0);
    assert_eq!(sa, broker_sa);
    assert_eq!(remote, SocketAddr::new(new_ip, 4500));
    assert_eq!(local, "192.0.2.1:4500".parse().unwrap());
    assert_eq!(children[0].remote, remote);
    assert!(
        !children[0].udp_encapsulation,
        "no NAT on the new path either"
    );
    let (sa, local, _, children) = moves(&lab.nodes[0].events).remove(0);
    assert_eq!(sa, client_sa);
    assert_eq!(local, SocketAddr::new(new_ip, 4500));
    assert_eq!(children[0].local, local);
    // The same IKE SA goes on at the new address: liveness checks and a
    // rekey work, nothing went down.
    let now = lab.now;
    lab.nodes[0].ep.rekey_ike_sa(now, client_sa);
    lab.run_for(Duration::from_secs(120));
    for n in 0..2 {
        assert_eq!(ups(&lab.nodes[n].events), 1);
        assert_eq!(downs(&lab.nodes[n].events), 0, "{:?}", lab.nodes[n].events);
    }
    assert!(lab.nodes[1]
        .sent
        .iter()
        .rev()
        .take(3)
        .all(|t| t.remote.ip() == new_ip));
}

#[test]
fn without_mobike_a_roaming_initiator_is_told_to_reconnect() {
    let pool = MemPool::new(4);
    let mut broker = broker_config("ecdsa");
    broker.mobike = false;
    let mut lab = Lab::pair(43, client_config("ecdsa"), broker, &pool);
    lab.connect();
    let (client_sa, _) = established(&mut lab);
    let now = lab.now;
    assert!(
        !lab.nodes[0].ep.roam(now, client_sa, ip("192.0.2.77")),
        "no MOBIKE and no NAT: the broker would not follow"
    );
    // Behind a NAT it follows anyway: the liveness check from the new
    // address moves it.
    let mut broker = broker_config("ecdsa");
    broker.mobike = false;
    let mut lab = Lab::pair(44, client_config("ecdsa"), broker, &pool);
    lab.masquerade = Some(Masquerade {
        inside: ip(CLIENT),
        public: ip("198.51.100.7"),
        port_shift: 10000,
    });
    lab.connect();
    let (client_sa, broker_sa) = established(&mut lab);
    lab.masquerade = Some(Masquerade {
        inside: ip("10.0.0.5"),
        public: ip("203.0.113.9"),
        port_shift: 20000,
    });
    lab.nodes[0].ip = ip("10.0.0.5");
    let now = lab.now;
    assert!(lab.nodes[0].ep.roam(now, client_sa, ip("10.0.0.5")));
    let moved = lab.run_until(Duration::from_secs(10), |lab| {
        !moves(&lab.nodes[1].events).is_empty()
    });
    assert!(moved);
    assert_eq!(moves(&lab.nodes[1].events)[0].0, broker_sa);
    assert_eq!(
        moves(&lab.nodes[1].events)[0].2,
        "203.0.113.9:24500".parse().unwrap()
    );
}

#[test]
fn answers_go_back_the_way_the_request_came() {
    let mut client = client_config("ecdsa");
    client.dpd_interval = Duration::from_secs(10);
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(45, client, broker_config("ecdsa"), &pool);
    lab.connect();
    established(&mut lab);
    // From now on the client's packets reach the broker from another
    // address (as strongSwan's MOBIKE probes do, from an address it has
    // not moved to yet), and only answers to that address reach it.
    lab.masquerade = Some(Masquerade {
        inside: ip(CLIENT),
        public: ip("192.0.2.99"),
        port_shift: 0,
    });
    let retransmits = lab.nodes[0].ep.stats().retransmits_sent;
    lab.run_for(Duration::from_secs(60));
    assert_eq!(downs(&lab.nodes[0].events), 0, "{:?}", lab.nodes[0].events);
    assert_eq!(
        lab.nodes[0].ep.stats().retransmits_sent,
        retransmits,
        "every liveness check answered at once"
    );
    // The peer is behind no NAT: the SA does not follow a packet, but
    // every request was answered where it came from.
    assert!(moves(&lab.nodes[1].events).is_empty());
    assert!(lab.nodes[1].ep.stats().moves_refused >= 5);
}
