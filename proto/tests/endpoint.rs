//! The IKE engine, two endpoints in memory with a virtual clock and seeded
//! randomness: handshakes, rekeys, deletes, liveness, lossy links,
//! fragmentation, cookies, and every refusal with its notify and events.

mod common;

use std::time::Duration;

use common::lab::*;
use sixgate_proto::crypto::{Encryption, Integrity, KeGroup, Prf};
use sixgate_proto::endpoint::{ChildSa, DownReason, Event};
use sixgate_proto::wire::*;

fn child_ups(events: &[Event]) -> Vec<ChildSa> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaUp(c) => Some(c.clone()),
            Event::ChildSaRekeyed { new, .. } => Some(new.clone()),
            _ => None,
        })
        .collect()
}

fn ike_up(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::IkeSaUp { .. }))
}

fn down_reason(events: &[Event]) -> Option<DownReason> {
    events.iter().find_map(|e| match e {
        Event::IkeSaDown { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

/// The two ends of each Child SA agree on SPIs and keys.
fn assert_paired(client: &ChildSa, broker: &ChildSa) {
    assert_eq!(client.outbound_spi, broker.inbound_spi);
    assert_eq!(client.inbound_spi, broker.outbound_spi);
    assert_eq!(client.outbound, broker.inbound);
    assert_eq!(client.inbound, broker.outbound);
    assert_ne!(client.inbound, client.outbound);
    assert_eq!(client.local_ts, broker.remote_ts);
    assert_eq!(client.remote_ts, broker.local_ts);
}

fn established(lab: &mut Lab) {
    let ok = lab.run_until(Duration::from_secs(60), |lab| {
        !child_ups(&lab.nodes[0].events).is_empty() && !child_ups(&lab.nodes[1].events).is_empty()
    });
    assert!(
        ok,
        "not established: client {:?} broker {:?}",
        lab.nodes[0].events, lab.nodes[1].events
    );
}

#[test]
fn handshake_for_every_default_suite() {
    let suites = [
        (
            Encryption::AesGcm16 { key_bits: 256 },
            None,
            Prf::HmacSha256,
            KeGroup::Curve25519,
        ),
        (
            Encryption::AesGcm16 { key_bits: 128 },
            None,
            Prf::HmacSha384,
            KeGroup::Ecp256,
        ),
        (
            Encryption::ChaCha20Poly1305,
            None,
            Prf::HmacSha512,
            KeGroup::Ecp384,
        ),
        (
            Encryption::AesCbc { key_bits: 256 },
            Some(Integrity::HmacSha256_128),
            Prf::HmacSha256,
            KeGroup::Modp2048,
        ),
        (
            Encryption::AesCbc { key_bits: 128 },
            Some(Integrity::HmacSha384_192),
            Prf::HmacSha384,
            KeGroup::Modp3072,
        ),
        (
            Encryption::AesCbc { key_bits: 256 },
            Some(Integrity::HmacSha512_256),
            Prf::HmacSha512,
            KeGroup::Curve25519,
        ),
    ];
    for (i, (encr, integ, prf, ke)) in suites.into_iter().enumerate() {
        for kind in ["ecdsa", "rsa"] {
            let mut client = client_config(kind);
            client.ike_policy.encr = vec![encr];
            client.ike_policy.integ = integ.into_iter().collect();
            client.ike_policy.prf = vec![prf];
            client.ike_policy.ke = vec![ke];
            client.esp_policy.encr = vec![encr];
            client.esp_policy.integ = integ.into_iter().collect();
            let pool = MemPool::new(10);
            let mut lab = Lab::pair(i as u64, client, broker_config(kind), &pool);
            lab.connect();
            established(&mut lab);
            let c = &child_ups(&lab.nodes[0].events)[0];
            let b = &child_ups(&lab.nodes[1].events)[0];
            assert_paired(c, b);
            assert_eq!(c.encr, encr);
            let suite = lab.nodes[0].events.iter().find_map(|e| match e {
                Event::IkeSaUp { suite, .. } => Some(*suite),
                _ => None,
            });
            let suite = suite.unwrap();
            assert_eq!(
                (suite.encr, suite.integ, suite.prf, suite.ke),
                (encr, integ, prf, ke),
                "{kind}"
            );
            let assigned = lab.nodes[0].events.iter().find_map(|e| match e {
                Event::AddressAssigned { address, dns, .. } => Some((*address, dns.clone())),
                _ => None,
            });
            let (address, dns) = assigned.expect("address assigned");
            assert_eq!(address, ("2001:db8:100::100".parse().unwrap(), 128));
            assert_eq!(
                dns,
                vec!["2001:db8:ffff::53".parse::<std::net::IpAddr>().unwrap()]
            );
            assert_eq!(
                c.local_ts,
                vec![sixgate_proto::endpoint::ts::ipv6_host(address.0)]
            );
            assert_eq!(pool.0.lock().unwrap().leases.len(), 1);
        }
    }
}
