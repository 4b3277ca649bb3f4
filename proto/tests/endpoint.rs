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

fn rekeyed(events: &[Event]) -> Vec<(u32, ChildSa)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaRekeyed {
                old_inbound_spi,
                new,
            } => Some((*old_inbound_spi, new.clone())),
            _ => None,
        })
        .collect()
}

fn downs(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDown { inbound_spi, .. } => Some(*inbound_spi),
            _ => None,
        })
        .collect()
}

#[test]
fn child_rekey_with_and_without_pfs_from_both_sides() {
    for (pfs, rekeyer) in [(false, 0), (true, 0), (false, 1), (true, 1)] {
        let mut client = client_config("ecdsa");
        let mut broker = broker_config("ecdsa");
        for c in [&mut client, &mut broker] {
            c.rekey_pfs = pfs;
            c.esp_policy.pfs = vec![KeGroup::Curve25519];
        }
        let pool = MemPool::new(4);
        let mut lab = Lab::pair(7, client, broker, &pool);
        lab.connect();
        established(&mut lab);
        let first = child_ups(&lab.nodes[rekeyer].events)[0].clone();
        let sa = lab.ike_sa(rekeyer);
        let now = lab.now;
        lab.nodes[rekeyer]
            .ep
            .rekey_child_sa(now, sa, first.inbound_spi);
        lab.run_for(Duration::from_secs(5));
        let (c, b) = (rekeyed(&lab.nodes[0].events), rekeyed(&lab.nodes[1].events));
        assert_eq!((c.len(), b.len()), (1, 1), "pfs {pfs} rekeyer {rekeyer}");
        assert_paired(&c[0].1, &b[0].1);
        assert_ne!(
            c[0].1.inbound,
            child_ups(&lab.nodes[0].events)[0].inbound,
            "fresh keys"
        );
        // The old SA is deleted on both sides, the new one stays.
        assert_eq!(downs(&lab.nodes[0].events), vec![c[0].0]);
        assert_eq!(downs(&lab.nodes[1].events), vec![b[0].0]);
    }
}

#[test]
fn ike_sa_rekey_keeps_children_and_traffic_going() {
    for rekeyer in [0, 1] {
        let pool = MemPool::new(4);
        let mut lab = Lab::pair(8, client_config("rsa"), broker_config("rsa"), &pool);
        lab.connect();
        established(&mut lab);
        let sa = lab.ike_sa(rekeyer);
        let now = lab.now;
        lab.nodes[rekeyer].ep.rekey_ike_sa(now, sa);
        lab.run_for(Duration::from_secs(5));
        for n in 0..2 {
            assert_eq!(
                count(&lab.nodes[n].events, |e| matches!(
                    e,
                    Event::IkeSaRekeyed { .. }
                )),
                1,
                "node {n}"
            );
            assert!(downs(&lab.nodes[n].events).is_empty());
        }
        // The new generation works: a Child SA rekey and a delete over it.
        let child = child_ups(&lab.nodes[0].events)[0].clone();
        let csa = lab.ike_sa(0);
        let now = lab.now;
        lab.nodes[0].ep.rekey_child_sa(now, csa, child.inbound_spi);
        lab.run_for(Duration::from_secs(5));
        assert_eq!(rekeyed(&lab.nodes[1].events).len(), 1);
        let (now, bsa) = (lab.now, lab.ike_sa(1));
        lab.nodes[1].ep.delete_ike_sa(now, bsa);
        lab.run_for(Duration::from_secs(30));
        assert_eq!(
            down_reason(&lab.nodes[0].events),
            Some(DownReason::DeletedByPeer)
        );
        assert_eq!(
            down_reason(&lab.nodes[1].events),
            Some(DownReason::DeletedLocally)
        );
        assert_eq!(lab.nodes[0].ep.stats().unknown_spi, 0);
        assert_eq!(lab.nodes[0].ep.ike_sa_count(), 0);
        assert_eq!(lab.nodes[1].ep.ike_sa_count(), 0);
    }
}

#[test]
fn rekeys_happen_on_lifetime_timers() {
    let mut client = client_config("ecdsa");
    client.child_lifetime = Duration::from_secs(600);
    client.ike_lifetime = Duration::from_secs(1800);
    client.rekey_jitter = Duration::from_secs(60);
    let mut broker = broker_config("ecdsa");
    broker.child_lifetime = Duration::from_secs(700);
    broker.ike_lifetime = Duration::from_secs(2000);
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(9, client, broker, &pool);
    lab.connect();
    established(&mut lab);
    lab.run_for(Duration::from_secs(3600));
    let child_rekeys = rekeyed(&lab.nodes[0].events).len();
    let ike_rekeys = count(&lab.nodes[0].events, |e| {
        matches!(e, Event::IkeSaRekeyed { .. })
    });
    assert!(
        (5..=8).contains(&child_rekeys),
        "{child_rekeys} child rekeys in an hour"
    );
    assert!(
        (1..=2).contains(&ike_rekeys),
        "{ike_rekeys} IKE rekeys in an hour"
    );
    assert!(down_reason(&lab.nodes[0].events).is_none());
    // Every rekey left exactly one live Child SA on each side.
    for n in 0..2 {
        let live = child_ups(&lab.nodes[n].events).len() - downs(&lab.nodes[n].events).len();
        assert_eq!(live, 1, "node {n}");
    }
}

#[test]
fn simultaneous_child_rekeys_leave_one_sa() {
    for seed in 0..6 {
        let pool = MemPool::new(4);
        let mut lab = Lab::pair(
            20 + seed,
            client_config("ecdsa"),
            broker_config("ecdsa"),
            &pool,
        );
        lab.connect();
        established(&mut lab);
        let c = child_ups(&lab.nodes[0].events)[0].clone();
        let b = child_ups(&lab.nodes[1].events)[0].clone();
        let (csa, bsa) = (lab.ike_sa(0), lab.ike_sa(1));
        let now = lab.now;
        lab.nodes[0].ep.rekey_child_sa(now, csa, c.inbound_spi);
        lab.nodes[1].ep.rekey_child_sa(now, bsa, b.inbound_spi);
        lab.run_for(Duration::from_secs(10));
        for n in 0..2 {
            let ups = child_ups(&lab.nodes[n].events);
            let down = downs(&lab.nodes[n].events);
            assert_eq!(ups.len(), 3, "node {n}: original and two rekeys");
            let live: Vec<&ChildSa> = ups
                .iter()
                .filter(|c| !down.contains(&c.inbound_spi))
                .collect();
            assert_eq!(live.len(), 1, "seed {seed} node {n}: {down:?}");
        }
        let live = |n: usize| {
            let down = downs(&lab.nodes[n].events);
            child_ups(&lab.nodes[n].events)
                .into_iter()
                .find(|c| !down.contains(&c.inbound_spi))
                .unwrap()
        };
        assert_paired(&live(0), &live(1));
    }
}

#[test]
fn dead_after_bounds_the_silence_and_a_restarted_broker_is_noticed_at_once() {
    // dead_after: a silent peer is dead 30 s after it was last heard, not
    // after the whole retransmission schedule.
    let mut client = client_config("ecdsa");
    client.dpd_interval = Duration::from_secs(10);
    client.retransmit_tries = 10;
    client.dead_after = Some(Duration::from_secs(30));
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(12, client.clone(), broker_config("ecdsa"), &pool);
    lab.connect();
    established(&mut lab);
    let broker_ip = lab.nodes[1].ip;
    lab.blackhole.push(broker_ip);
    let silent_from = lab.now;
    assert!(lab.run_until(Duration::from_secs(600), |lab| {
        down_reason(&lab.nodes[0].events).is_some()
    }));
    let took = lab.now - silent_from;
    assert!(took <= Duration::from_secs(31), "dead after {took:?}");
    assert_eq!(
        down_reason(&lab.nodes[0].events),
        Some(DownReason::PeerDead)
    );

    // A broker that restarted (its state gone) answers the next liveness
    // check with INVALID_IKE_SPI: the client gives up on the first answer.
    let mut lab = Lab::pair(13, client, broker_config("ecdsa"), &pool);
    lab.connect();
    established(&mut lab);
    lab.nodes[1].ep = sixgate_proto::endpoint::Endpoint::new(
        std::sync::Arc::new(broker_config("ecdsa")),
        Box::new(common::rng(99)),
        lab.now,
        common::NOW,
    );
    let restarted = lab.now;
    assert!(lab.run_until(Duration::from_secs(60), |lab| {
        down_reason(&lab.nodes[0].events).is_some()
    }));
    let took = lab.now - restarted;
    assert!(
        took <= Duration::from_secs(11),
        "noticed after {took:?}, at the first check (dpd_interval 10 s)"
    );
    assert_eq!(
        down_reason(&lab.nodes[0].events),
        Some(DownReason::PeerDead)
    );
    assert_eq!(
        lab.nodes[0].ep.stats().retransmits_sent,
        0,
        "no retransmission needed"
    );
}

#[test]
fn dpd_declares_a_silent_peer_dead() {
    let mut client = client_config("ecdsa");
    client.dpd_interval = Duration::from_secs(10);
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(10, client, broker_config("ecdsa"), &pool);
    lab.connect();
    established(&mut lab);
    // Quiet but alive: liveness checks are answered.
    lab.run_for(Duration::from_secs(120));
    assert!(down_reason(&lab.nodes[0].events).is_none());
    let broker_ip = lab.nodes[1].ip;
    lab.blackhole.push(broker_ip);
    let dead = lab.run_until(Duration::from_secs(600), |lab| {
        down_reason(&lab.nodes[0].events).is_some()
    });
    assert!(dead);
    assert_eq!(
        down_reason(&lab.nodes[0].events),
        Some(DownReason::PeerDead)
    );
    assert_eq!(
        downs(&lab.nodes[0].events).len(),
        1,
        "its Child SA went with it"
    );
    assert!(lab.nodes[0].ep.stats().retransmits_sent >= 5);
}

#[test]
fn lossy_links_converge() {
    for seed in 0..8 {
        let pool = MemPool::new(4);
        let mut lab = Lab::pair(
            30 + seed,
            client_config("ecdsa"),
            broker_config("ecdsa"),
            &pool,
        );
        lab.link = Link {
            loss: 25,
            duplicate: 20,
            reorder: 20,
            // Late answers too: a round trip of 1.6 s is most of the first
            // retransmission timeout.
            latency: Duration::from_millis(800),
            ..Link::default()
        };
        lab.connect();
        let ok = lab.run_until(Duration::from_secs(300), |lab| {
            !child_ups(&lab.nodes[0].events).is_empty()
                && !child_ups(&lab.nodes[1].events).is_empty()
        });
        assert!(ok, "seed {seed}: {:?}", lab.nodes[0].events);
        assert_paired(
            &child_ups(&lab.nodes[0].events)[0],
            &child_ups(&lab.nodes[1].events)[0],
        );
        // Rekey and delete over the same link.
        let c = child_ups(&lab.nodes[0].events)[0].clone();
        let csa = lab.ike_sa(0);
        let now = lab.now;
        lab.nodes[0].ep.rekey_child_sa(now, csa, c.inbound_spi);
        let ok = lab.run_until(Duration::from_secs(300), |lab| {
            !rekeyed(&lab.nodes[1].events).is_empty() && !rekeyed(&lab.nodes[0].events).is_empty()
        });
        assert!(ok, "seed {seed} rekey");
        assert_paired(
            &rekeyed(&lab.nodes[0].events)[0].1,
            &rekeyed(&lab.nodes[1].events)[0].1,
        );
        assert_eq!(lab.nodes[1].ep.stats().integrity_failed, 0);
    }
}

#[test]
fn retransmitted_requests_get_the_cached_response_byte_for_byte() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(11, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    lab.connect();
    established(&mut lab);
    // Replay the client's IKE_AUTH request: the broker answers with the same
    // bytes, without creating anything.
    let ike = |t: &sixgate_proto::endpoint::Transmit| -> Vec<u8> {
        match classify_udp4500(&t.payload) {
            Ok(Udp4500::Ike(m)) if t.remote.port() == 4500 || t.local.port() == 4500 => m.to_vec(),
            _ => t.payload.clone(),
        }
    };
    let is_auth = |t: &&sixgate_proto::endpoint::Transmit| {
        Header::peek(&ike(t)).is_ok_and(|h| h.exchange == ExchangeType::IKE_AUTH)
    };
    let auth_request = lab.nodes[0].sent.iter().find(is_auth).cloned().unwrap();
    let original_response = lab.nodes[1].sent.iter().find(is_auth).cloned().unwrap();
    let answers_before = lab.nodes[1].sent.len();
    let events_before = lab.nodes[1].events.len();
    let now = lab.now;
    lab.nodes[1].ep.handle(
        now,
        auth_request.local,
        auth_request.remote,
        &ike(&auth_request),
    );
    lab.deliver();
    assert_eq!(lab.nodes[1].sent.len(), answers_before + 1);
    assert_eq!(
        lab.nodes[1].sent.last().unwrap().payload,
        original_response.payload
    );
    assert_eq!(lab.nodes[1].events.len(), events_before);
    assert_eq!(lab.nodes[1].ep.stats().retransmits_answered, 1);
    assert_eq!(pool.0.lock().unwrap().leases.len(), 1);
}

/// Every datagram either node sent, as IKE messages (marker removed).
fn messages(lab: &Lab, node: usize) -> Vec<Vec<u8>> {
    lab.nodes[node]
        .sent
        .iter()
        .map(|t| match classify_udp4500(&t.payload) {
            Ok(Udp4500::Ike(m)) if t.remote.port() == 4500 => m.to_vec(),
            _ => t.payload.clone(),
        })
        .collect()
}

#[test]
fn fragmentation_at_576_octets() {
    let mut client = client_config("rsa");
    client.fragment_size = 576;
    let mut broker = broker_config("rsa");
    broker.fragment_size = 576;
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(12, client, broker, &pool);
    lab.link = Link {
        loss: 0,
        duplicate: 10,
        reorder: 30,
        latency: Duration::from_millis(20),
        // What does not fit is lost, as on a path that drops IP fragments.
        mtu: 576,
    };
    lab.connect();
    established(&mut lab);
    for n in 0..2 {
        let sent = &lab.nodes[n].sent;
        for t in sent {
            assert!(
                t.payload.len() + 28 <= 576,
                "node {n}: {} octet datagram",
                t.payload.len()
            );
        }
        let fragments = messages(&lab, n)
            .iter()
            .filter(|m| {
                Message::parse(m).is_ok_and(|m| {
                    m.bodies()
                        .any(|b| matches!(b, PayloadBody::EncryptedFragment(_)))
                })
            })
            .count();
        assert!(fragments >= 4, "node {n} sent {fragments} SKF fragments");
    }
}

#[test]
fn invalid_ke_payload_makes_the_initiator_retry_with_the_group_asked_for() {
    let mut client = client_config("ecdsa");
    client.ike_policy.ke = vec![KeGroup::Modp3072, KeGroup::Ecp256];
    let mut broker = broker_config("ecdsa");
    broker.ike_policy.ke = vec![KeGroup::Ecp256];
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(13, client, broker, &pool);
    lab.connect();
    established(&mut lab);
    let first = Message::parse(&messages(&lab, 1)[0]).unwrap();
    let n = first
        .notifies(NotifyType::INVALID_KE_PAYLOAD)
        .next()
        .expect("INVALID_KE_PAYLOAD");
    assert_eq!(n.data, 19u16.to_be_bytes());
    let suite = lab.nodes[0].events.iter().find_map(|e| match e {
        Event::IkeSaUp { suite, .. } => Some(*suite),
        _ => None,
    });
    assert_eq!(suite.unwrap().ke, KeGroup::Ecp256);
}

#[test]
fn cookies_under_a_flood_of_half_open_sas() {
    let mut broker = broker_config("ecdsa");
    broker.cookie_threshold = 20;
    broker.half_open_per_source = 1000;
    let pool = MemPool::new(4);
    // Node 0: the real client; node 2: a flooder that never completes.
    let mut lab = Lab::new(
        14,
        vec![
            (CLIENT, client_config("ecdsa")),
            (BROKER, broker),
            ("192.0.2.66", client_config("ecdsa")),
        ],
    );
    lab.nodes[1].pool = Some(pool.clone());
    let mut flood = connect_request();
    flood.local = "192.0.2.66:500".parse().unwrap();
    for _ in 0..50 {
        let now = lab.now;
        lab.nodes[2].ep.connect(now, flood.clone());
    }
    // Spoofed sources: the answers never reach the flooder.
    lab.blackhole.push("192.0.2.66".parse().unwrap());
    lab.deliver();
    let half_open_answers = lab.nodes[1].ep.stats().cookies_sent;
    assert!(
        half_open_answers >= 25,
        "cookies demanded {half_open_answers}"
    );
    assert_eq!(lab.nodes[1].ep.ike_sa_count(), 20);
    // A real client gets through with a cookie round.
    lab.connect();
    established(&mut lab);
    let first_answer = Message::parse(
        &messages(&lab, 1)
            .into_iter()
            .find(|m| {
                Message::parse(m).is_ok_and(|m| {
                    m.header.spi_i != 0 && m.notifies(NotifyType::COOKIE).next().is_some()
                })
            })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        first_answer.header.spi_r, 0,
        "no state kept for a cookie request"
    );
    // Half-open SAs time out and free their slots (once the flooder's
    // retransmissions, which recreate them, have stopped).
    lab.run_for(Duration::from_secs(200));
    assert!(
        lab.nodes[1].ep.ike_sa_count() <= 1,
        "{}",
        lab.nodes[1].ep.ike_sa_count()
    );
}

#[test]
fn many_clients_behind_one_nat_are_not_locked_out() {
    let mut broker = broker_config("ecdsa");
    broker.half_open_per_source = 2;
    let pool = MemPool::new(40);
    let mut lab = Lab::new(15, vec![(CLIENT, client_config("ecdsa")), (BROKER, broker)]);
    lab.nodes[1].pool = Some(pool.clone());
    for port in 0..20u16 {
        let mut req = connect_request();
        req.local.set_port(1000 + port);
        let now = lab.now;
        lab.nodes[0].ep.connect(now, req);
    }
    let ok = lab.run_until(Duration::from_secs(120), |lab| {
        child_ups(&lab.nodes[1].events).len() == 20
    });
    assert!(ok, "{} of 20 up", child_ups(&lab.nodes[1].events).len());
    assert!(lab.nodes[1].ep.stats().cookies_sent > 0);
}

/// Runs a handshake expected to fail; returns both sides' events and the
/// broker's and client's messages.
fn failing(
    client: sixgate_proto::endpoint::Config,
    broker: sixgate_proto::endpoint::Config,
    pool: &MemPool,
) -> Lab {
    let mut lab = Lab::pair(16, client, broker, pool);
    lab.connect();
    lab.run_for(Duration::from_secs(120));
    lab
}

/// Whether any message the node sent carries this notify, in the clear or
/// (for IKE_AUTH and later) as seen in the peer's events.
fn cleartext_notify(lab: &Lab, node: usize, ty: NotifyType) -> bool {
    messages(lab, node)
        .iter()
        .any(|m| Message::parse(m).is_ok_and(|m| m.notifies(ty).next().is_some()))
}

#[test]
fn refusals_send_the_right_notify_and_report_on_both_sides() {
    let auth_failed = NotifyType::AUTHENTICATION_FAILED;
    let cases: Vec<(
        &str,
        sixgate_proto::endpoint::Config,
        sixgate_proto::endpoint::Config,
        u32,
    )> = vec![
        (
            "rogue CA",
            {
                let mut c = client_config("ecdsa");
                c.certificates = common::certs("bad/ecdsa/rogue-client.pem");
                c.private_key =
                    std::sync::Arc::new(common::private_key("bad/ecdsa/rogue-client.key"));
                c
            },
            broker_config("ecdsa"),
            4,
        ),
        (
            "expired",
            {
                let mut c = client_config("rsa");
                c.certificates = common::certs("bad/rsa/expired-client.pem");
                c.private_key =
                    std::sync::Arc::new(common::private_key("bad/rsa/expired-client.key"));
                c
            },
            broker_config("rsa"),
            4,
        ),
        (
            "ID not in SAN",
            {
                let mut c = client_config("ecdsa");
                c.identity = Identification::rfc822("client2@example.net");
                c
            },
            broker_config("ecdsa"),
            4,
        ),
    ];
    for (name, client, broker, pool_size) in cases {
        let pool = MemPool::new(pool_size);
        let lab = failing(client, broker, &pool);
        match down_reason(&lab.nodes[1].events) {
            Some(DownReason::RefusedPeer(ty, why)) => {
                assert_eq!(ty, auth_failed, "{name}: {why}");
            }
            other => panic!("{name}: broker {other:?}"),
        }
        assert_eq!(
            down_reason(&lab.nodes[0].events),
            Some(DownReason::RefusedByPeer(auth_failed)),
            "{name}"
        );
        assert!(pool.0.lock().unwrap().leases.is_empty(), "{name}: no lease");
        assert!(
            child_ups(&lab.nodes[0].events).is_empty()
                && child_ups(&lab.nodes[1].events).is_empty()
        );
    }

    // The broker's certificate is refused by the client: it tells the broker.
    let mut client = client_config("ecdsa");
    client.trust_anchors =
        sixgate_proto::cert::TrustAnchors::new(common::certs("bad/ecdsa/rogue-ca.pem")).unwrap();
    let pool = MemPool::new(4);
    let lab = failing(client, broker_config("ecdsa"), &pool);
    assert!(
        matches!(down_reason(&lab.nodes[0].events), Some(DownReason::RefusedPeer(t, _)) if t == auth_failed)
    );
    assert_eq!(
        down_reason(&lab.nodes[1].events),
        Some(DownReason::RefusedByPeer(auth_failed))
    );
}

#[test]
fn no_common_proposal_is_refused_in_ike_sa_init() {
    let mut client = client_config("ecdsa");
    client.ike_policy.encr = vec![Encryption::AesCbc { key_bits: 128 }];
    client.ike_policy.integ = vec![Integrity::HmacSha512_256];
    let mut broker = broker_config("ecdsa");
    broker.ike_policy.integ = vec![Integrity::HmacSha256_128];
    broker.ike_policy.encr = vec![
        Encryption::AesCbc { key_bits: 256 },
        Encryption::AesGcm16 { key_bits: 128 },
    ];
    let pool = MemPool::new(4);
    let lab = failing(client, broker, &pool);
    assert!(cleartext_notify(&lab, 1, NotifyType::NO_PROPOSAL_CHOSEN));
    assert_eq!(
        down_reason(&lab.nodes[0].events),
        Some(DownReason::RefusedByPeer(NotifyType::NO_PROPOSAL_CHOSEN))
    );
    assert_eq!(
        lab.nodes[1].ep.ike_sa_count(),
        0,
        "the broker kept no state"
    );
}

#[test]
fn child_refusals_traffic_selectors_esp_proposal_and_full_pool() {
    let v4_only = {
        let mut c = client_config("ecdsa");
        c.esp_policy.encr = vec![Encryption::AesGcm16 { key_bits: 256 }];
        c
    };
    // TS not acceptable: the client wants IPv4 only.
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(17, v4_only, broker_config("ecdsa"), &pool);
    let mut req = connect_request();
    req.local_ts = vec![TrafficSelector::ipv4(
        "0.0.0.0".parse().unwrap(),
        "255.255.255.255".parse().unwrap(),
    )];
    req.remote_ts = req.local_ts.clone();
    let now = lab.now;
    lab.nodes[0].ep.connect(now, req);
    lab.run_for(Duration::from_secs(60));
    let refused = |lab: &Lab, n: usize| {
        lab.nodes[n].events.iter().find_map(|e| match e {
            Event::ChildSaRefused { notify, .. } => Some(*notify),
            _ => None,
        })
    };
    assert_eq!(refused(&lab, 0), Some(NotifyType::TS_UNACCEPTABLE));
    assert_eq!(refused(&lab, 1), Some(NotifyType::TS_UNACCEPTABLE));
    assert_eq!(
        down_reason(&lab.nodes[1].events),
        Some(DownReason::DeletedByPeer)
    );
    assert!(pool.0.lock().unwrap().released.len() <= 1);

    // No common ESP proposal.
    let mut client = client_config("ecdsa");
    client.esp_policy.encr = vec![Encryption::AesGcm16 { key_bits: 128 }];
    let mut broker = broker_config("ecdsa");
    broker.esp_policy.encr = vec![Encryption::ChaCha20Poly1305];
    let pool = MemPool::new(4);
    let lab = failing(client, broker, &pool);
    assert_eq!(refused(&lab, 0), Some(NotifyType::NO_PROPOSAL_CHOSEN));
    assert_eq!(refused(&lab, 1), Some(NotifyType::NO_PROPOSAL_CHOSEN));

    // A full pool: the first client gets the only address, the second is
    // refused with INTERNAL_ADDRESS_FAILURE, and the first is undisturbed.
    let pool = MemPool::new(1);
    let mut lab = Lab::new(
        18,
        vec![
            (CLIENT, client_config("ecdsa")),
            (BROKER, broker_config("ecdsa")),
            ("192.0.2.3", {
                let mut c = client_config("ecdsa");
                c.identity = Identification::rfc822("client2@example.net");
                c.certificates = common::certs("ecdsa/client2.pem");
                c.private_key = std::sync::Arc::new(common::private_key("ecdsa/client2.key"));
                c
            }),
        ],
    );
    lab.nodes[1].pool = Some(pool.clone());
    lab.connect();
    established(&mut lab);
    let mut second = connect_request();
    second.local = "192.0.2.3:500".parse().unwrap();
    let now = lab.now;
    lab.nodes[2].ep.connect(now, second);
    lab.run_for(Duration::from_secs(60));
    assert_eq!(refused(&lab, 2), Some(NotifyType::INTERNAL_ADDRESS_FAILURE));
    assert_eq!(refused(&lab, 1), Some(NotifyType::INTERNAL_ADDRESS_FAILURE));
    assert_eq!(
        down_reason(&lab.nodes[2].events),
        Some(DownReason::DeletedLocally)
    );
    assert!(
        down_reason(&lab.nodes[0].events).is_none(),
        "first client undisturbed"
    );
    assert_eq!(pool.0.lock().unwrap().leases.len(), 1);
}

#[test]
fn initial_contact_replaces_the_old_sa_of_the_same_identity() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(19, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    lab.connect();
    established(&mut lab);
    // The client "reboots": a fresh endpoint with the same identity.
    let now = lab.now;
    lab.nodes[0].ep = sixgate_proto::endpoint::Endpoint::new(
        std::sync::Arc::new(client_config("ecdsa")),
        Box::new(common::rng(99)),
        now,
        common::NOW,
    );
    lab.nodes[0].events.clear();
    lab.nodes[0].event_times.clear();
    lab.connect();
    established(&mut lab);
    assert_eq!(
        down_reason(&lab.nodes[1].events),
        Some(DownReason::Replaced)
    );
    let ups = child_ups(&lab.nodes[1].events);
    assert_eq!(ups.len(), 2);
    assert_eq!(
        ups[0].remote_ts, ups[1].remote_ts,
        "same address for the same identity"
    );
    assert!(
        pool.0.lock().unwrap().released.is_empty(),
        "the lease was not given up"
    );
    lab.run_for(Duration::from_secs(30));
    assert_eq!(
        lab.nodes[1].ep.ike_sa_count(),
        1,
        "the replaced SA is gone after lingering"
    );
}

#[test]
fn half_open_state_is_capped() {
    let mut broker = broker_config("ecdsa");
    broker.max_half_open = 10;
    broker.cookie_threshold = 1000;
    broker.half_open_per_source = 1000;
    let pool = MemPool::new(4);
    let mut lab = Lab::new(
        40,
        vec![("192.0.2.66", client_config("ecdsa")), (BROKER, broker)],
    );
    lab.nodes[1].pool = Some(pool.clone());
    lab.blackhole.push("192.0.2.66".parse().unwrap());
    let mut flood = connect_request();
    flood.local = "192.0.2.66:500".parse().unwrap();
    for _ in 0..100 {
        let now = lab.now;
        lab.nodes[0].ep.connect(now, flood.clone());
    }
    lab.deliver();
    assert_eq!(lab.nodes[1].ep.ike_sa_count(), 10);
    assert_eq!(lab.nodes[1].ep.stats().half_open_dropped, 90);
}

#[test]
fn replayed_and_out_of_window_messages_are_dropped_and_counted() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(41, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    lab.connect();
    established(&mut lab);
    // A Child SA rekey by the client: CREATE_CHILD_SA, then INFORMATIONAL.
    let (csa, now) = (lab.ike_sa(0), lab.now);
    let child = child_ups(&lab.nodes[0].events)[0].inbound_spi;
    lab.nodes[0].ep.rekey_child_sa(now, csa, child);
    lab.run_for(Duration::from_secs(5));
    let requests: Vec<Vec<u8>> = messages(&lab, 0)
        .into_iter()
        .filter(|m| {
            Header::peek(m)
                .is_ok_and(|h| !h.flags.response() && h.exchange != ExchangeType::IKE_SA_INIT)
        })
        .collect();
    assert!(
        requests.len() >= 3,
        "IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL"
    );
    let before = lab.nodes[1].ep.stats().clone();
    let events_before = lab.nodes[1].events.len();
    let (from, to) = (lab.nodes[0].sent[0].local, lab.nodes[0].sent[0].remote);
    // An old request (IKE_AUTH, message 1): outside the window.
    lab.nodes[1].ep.handle(now, from, to, &requests[0]);
    // A response nobody asked for.
    let mut response = requests[1].clone();
    response[19] |= Flags::RESPONSE;
    lab.nodes[1].ep.handle(now, from, to, &response);
    // A request with a future message ID.
    let mut future = requests[1].clone();
    future[20..24].copy_from_slice(&99u32.to_be_bytes());
    lab.nodes[1].ep.handle(now, from, to, &future);
    // A forged one in the window.
    let mut forged = requests[requests.len() - 1].clone();
    let next_id = u32::from_be_bytes(forged[20..24].try_into().unwrap()) + 1;
    forged[20..24].copy_from_slice(&next_id.to_be_bytes());
    let last = forged.len() - 1;
    forged[last] ^= 1;
    lab.nodes[1].ep.handle(now, from, to, &forged);
    lab.deliver();
    let after = lab.nodes[1].ep.stats();
    assert_eq!(after.stray, before.stray + 3);
    assert_eq!(after.integrity_failed, before.integrity_failed + 1);
    assert_eq!(lab.nodes[1].events.len(), events_before, "nothing happened");
    // And the SA is fine.
    lab.run_for(Duration::from_secs(100));
    assert!(down_reason(&lab.nodes[1].events).is_none());
}

#[test]
fn simultaneous_ike_rekeys_settle_on_one_new_ike_sa() {
    for seed in 0..6 {
        let pool = MemPool::new(4);
        let mut lab = Lab::pair(
            50 + seed,
            client_config("ecdsa"),
            broker_config("ecdsa"),
            &pool,
        );
        lab.connect();
        established(&mut lab);
        let (csa, bsa, now) = (lab.ike_sa(0), lab.ike_sa(1), lab.now);
        lab.nodes[0].ep.rekey_ike_sa(now, csa);
        lab.nodes[1].ep.rekey_ike_sa(now, bsa);
        let ok = lab.run_until(Duration::from_secs(60), |lab| {
            (0..2).all(|n| {
                count(&lab.nodes[n].events, |e| {
                    matches!(e, Event::IkeSaRekeyed { .. })
                }) >= 1
            })
        });
        assert!(ok, "seed {seed}");
        lab.run_for(Duration::from_secs(30));
        for n in 0..2 {
            assert_eq!(
                count(&lab.nodes[n].events, |e| matches!(
                    e,
                    Event::IkeSaRekeyed { .. }
                )),
                1,
                "seed {seed} node {n}"
            );
            assert!(down_reason(&lab.nodes[n].events).is_none());
        }
        // The surviving generation carries on: a Child SA rekey over it.
        let child = child_ups(&lab.nodes[0].events)[0].inbound_spi;
        let now = lab.now;
        lab.nodes[0].ep.rekey_child_sa(now, csa, child);
        lab.run_for(Duration::from_secs(5));
        assert_eq!(rekeyed(&lab.nodes[1].events).len(), 1, "seed {seed}");
    }
}

#[test]
fn a_higher_major_version_is_answered_in_version_2() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(60, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    let request = Message {
        header: Header {
            spi_i: 7,
            spi_r: 0,
            minor_version: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: Flags::new(true, false),
            message_id: 0,
        },
        payloads: vec![],
    };
    let mut bytes = request.emit().unwrap();
    bytes[17] = 0x30; // IKEv3
    let (from, to) = (
        "192.0.2.2:500".parse().unwrap(),
        "192.0.2.1:500".parse().unwrap(),
    );
    let now = lab.now;
    lab.nodes[1].ep.handle(now, from, to, &bytes);
    lab.deliver();
    let answer = Message::parse(&lab.nodes[1].sent.last().expect("an answer").payload).unwrap();
    assert_eq!(answer.header.spi_i, 7);
    assert!(answer.header.flags.response());
    assert_eq!(
        answer
            .notifies(NotifyType::INVALID_MAJOR_VERSION)
            .next()
            .unwrap()
            .data,
        vec![0x20]
    );
    // A response of a higher version gets nothing.
    let sent = lab.nodes[1].sent.len();
    bytes[19] |= Flags::RESPONSE;
    lab.nodes[1].ep.handle(now, from, to, &bytes);
    lab.deliver();
    assert_eq!(lab.nodes[1].sent.len(), sent);
    assert_eq!(lab.nodes[1].ep.ike_sa_count(), 0);
}

/// One certificate, many spellings of its identity: they all meet in one
/// canonical identity, so they share one lease, and a local part of
/// another case is refused outright.
#[test]
fn spellings_of_one_identity_share_one_lease() {
    let pool = MemPool::new(10);
    for (seed, spelling) in [
        "client@example.net",
        "client@EXAMPLE.net",
        "client@Example.NET",
    ]
    .into_iter()
    .enumerate()
    {
        let client = config("ecdsa", "client", Identification::rfc822(spelling));
        let mut lab = Lab::pair(seed as u64, client, broker_config("ecdsa"), &pool);
        lab.connect();
        established(&mut lab);
        let proved = lab.nodes[1].events.iter().find_map(|e| match e {
            Event::IkeSaUp { peer_identity, .. } => Some(peer_identity.to_string()),
            _ => None,
        });
        assert_eq!(proved.as_deref(), Some("client@example.net"), "{spelling}");
    }
    assert_eq!(pool.0.lock().unwrap().leases.len(), 1);
    let client = config(
        "ecdsa",
        "client",
        Identification::rfc822("CLIENT@example.net"),
    );
    let mut lab = Lab::pair(9, client, broker_config("ecdsa"), &pool);
    lab.connect();
    lab.run_for(std::time::Duration::from_secs(5));
    assert!(lab.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: sixgate_proto::endpoint::DownReason::RefusedPeer(
                sixgate_proto::wire::NotifyType::AUTHENTICATION_FAILED,
                _
            ),
            ..
        }
    )));
    assert_eq!(pool.0.lock().unwrap().leases.len(), 1);
}

/// Admission is staged: the IKE_AUTH answer waits for the lease to be
/// durable, retransmissions of the request meanwhile are not processed
/// again, and other peers are served in the meantime.
#[test]
fn the_ike_auth_answer_waits_for_a_slow_lease_write_and_nobody_else_does() {
    let pool = MemPool::new(4);
    let mut lab = Lab::new(
        40,
        vec![
            (CLIENT, client_config("ecdsa")),
            (BROKER, broker_config("ecdsa")),
            (
                "192.0.2.3",
                config(
                    "ecdsa",
                    "client2",
                    Identification::rfc822("client2@example.net"),
                ),
            ),
        ],
    );
    lab.nodes[1].pool = Some(pool.clone());
    // Slower than the first two retransmissions (2 s, then 4 s more).
    lab.nodes[1].pool_delay = Duration::from_secs(5);
    lab.connect();
    lab.run_for(Duration::from_secs(1));
    let requested = count(&lab.nodes[1].events, |e| {
        matches!(e, Event::AddressRequested { .. })
    });
    assert_eq!(requested, 1);
    // Another peer's IKE_SA_INIT is answered while the lease is written.
    let mut other = connect_request();
    other.local = "192.0.2.3:500".parse().unwrap();
    let now = lab.now;
    lab.nodes[2].ep.connect(now, other);
    lab.deliver();
    assert!(
        lab.nodes[1]
            .sent
            .iter()
            .filter(|t| t.remote.ip().to_string() == "192.0.2.3")
            .count()
            >= 1,
        "the second peer waited for the first one's disk"
    );
    assert!(
        child_ups(&lab.nodes[0].events).is_empty(),
        "answered before the lease was durable"
    );
    let ok = lab.run_until(Duration::from_secs(30), |lab| {
        !child_ups(&lab.nodes[0].events).is_empty() && !child_ups(&lab.nodes[2].events).is_empty()
    });
    assert!(ok, "both came up");
    assert!(
        lab.nodes[1].ep.stats().retransmits_while_admitting >= 1,
        "{:?}",
        lab.nodes[1].ep.stats()
    );
    assert_eq!(
        child_ups(&lab.nodes[1].events).len(),
        2,
        "one Child SA each, none twice"
    );
    assert_eq!(
        count(&lab.nodes[1].events, |e| matches!(
            e,
            Event::AddressRequested { .. }
        )),
        2
    );
    assert_eq!(pool.0.lock().unwrap().leases.len(), 2);
}

/// A store that never answers does not leave the peer hanging forever.
#[test]
fn a_lease_write_that_never_completes_is_refused_in_time() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(41, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    lab.nodes[1].pool_delay = Duration::from_secs(3600);
    lab.connect();
    lab.run_for(Duration::from_secs(60));
    let refused = lab.nodes[0].events.iter().find_map(|e| match e {
        Event::ChildSaRefused { notify, .. } => Some(*notify),
        _ => None,
    });
    assert_eq!(refused, Some(NotifyType::INTERNAL_ADDRESS_FAILURE));
    // The write that completes later finds no SA waiting: the lease goes back.
    lab.run_for(Duration::from_secs(3600));
    assert_eq!(pool.0.lock().unwrap().released.len(), 1);
}
