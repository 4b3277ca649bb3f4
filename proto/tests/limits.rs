//! What one identity and one IKE SA may hold (`[limits]`), and
//! revocation of live SAs, in the in-memory lab: a third IKE SA of one
//! identity, a Child SA rekey beyond the limit, a TSr of 255 ranges, a
//! rekeyed Child SA the peer never deletes, a source that fills the
//! half-open table, `set_revocations` on connected peers, and a second
//! connection of one identity under each `unique` mode.

mod common;

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use common::lab::*;
use sixgate_proto::cert::Revocations;
use sixgate_proto::endpoint::{ts, DownReason, Event, Unique};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::{NotifyType, TrafficSelector};

const INFORMATIONAL: u8 = 37;

fn ike_ups(events: &[Event]) -> usize {
    count(events, |e| matches!(e, Event::IkeSaUp { .. }))
}

fn down_reasons(events: &[Event]) -> Vec<DownReason> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// Node `i` (a client at `ip`) connects, with or without INITIAL_CONTACT.
fn connect_from(lab: &mut Lab, i: usize, ip: &str, initial_contact: bool) {
    let mut request = connect_request();
    request.local = SocketAddr::new(ip.parse().unwrap(), 500);
    request.initial_contact = initial_contact;
    let now = lab.now;
    lab.nodes[i].ep.connect(now, request);
}

#[test]
fn a_third_ike_sa_of_one_identity_is_refused() {
    let ips = [CLIENT, "192.0.2.3", "192.0.2.4"];
    let mut configs: Vec<(&str, _)> = ips.iter().map(|ip| (*ip, client_config("ecdsa"))).collect();
    // Overlapping SAs of one identity: `unique = "never"`.
    let mut broker = broker_config("ecdsa");
    broker.unique = Unique::Never;
    configs.push((BROKER, broker));
    let mut lab = Lab::new(21, configs);
    let pool = MemPool::new(8);
    lab.nodes[3].pool = Some(pool);
    // Two overlapping SAs (a reconnect without INITIAL_CONTACT) are fine.
    for (i, ip) in ips.iter().enumerate().take(2) {
        connect_from(&mut lab, i, ip, false);
        lab.run_for(Duration::from_secs(5));
        assert_eq!(ike_ups(&lab.nodes[i].events), 1, "client {i}");
    }
    assert_eq!(ike_ups(&lab.nodes[3].events), 2);
    let identity = CanonicalIdentity::parse("client@example.net").unwrap();
    assert_eq!(lab.nodes[3].ep.ike_sas_of(&identity), 2);

    connect_from(&mut lab, 2, ips[2], false);
    lab.run_for(Duration::from_secs(5));
    assert_eq!(
        down_reasons(&lab.nodes[2].events),
        vec![DownReason::RefusedByPeer(NotifyType::AUTHENTICATION_FAILED)]
    );
    let refused = down_reasons(&lab.nodes[3].events);
    assert!(
        matches!(&refused[..], [DownReason::RefusedPeer(NotifyType::AUTHENTICATION_FAILED, why)]
            if why.contains("ike_sas_per_identity")),
        "{refused:?}"
    );
    assert_eq!(lab.nodes[3].ep.ike_sas_of(&identity), 2, "the two stay up");

    // INITIAL_CONTACT from a third address is that device's own first
    // SA: it ends nobody else's, and the limit holds.
    connect_from(&mut lab, 2, ips[2], true);
    lab.run_for(Duration::from_secs(5));
    assert_eq!(ike_ups(&lab.nodes[2].events), 0);
    assert_eq!(down_reasons(&lab.nodes[2].events).len(), 2);
    assert_eq!(lab.nodes[3].ep.ike_sas_of(&identity), 2);
    // From the first one's address it is that device, restarted: its old
    // SA goes, the new one takes its place.
    connect_from(&mut lab, 0, ips[0], true);
    lab.run_for(Duration::from_secs(5));
    assert_eq!(ike_ups(&lab.nodes[0].events), 2);
    assert_eq!(
        down_reasons(&lab.nodes[0].events),
        vec![DownReason::Replaced]
    );
    assert!(down_reasons(&lab.nodes[1].events).is_empty());
    assert_eq!(lab.nodes[3].ep.ike_sas_of(&identity), 2);
}

#[test]
fn a_tsr_of_255_ranges_is_refused_and_installs_nothing() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(22, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    let mut request = connect_request();
    request.remote_ts = (0..255u16)
        .map(|i| {
            let a = Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0);
            let b = Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0xffff);
            TrafficSelector::ipv6(a, b)
        })
        .collect();
    let now = lab.now;
    lab.client().ep.connect(now, request);
    lab.run_for(Duration::from_secs(5));
    let refusals: Vec<NotifyType> = lab.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaRefused { notify, .. } => Some(*notify),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, vec![NotifyType::TS_UNACCEPTABLE]);
    for n in 0..2 {
        assert_eq!(
            count(&lab.nodes[n].events, |e| matches!(e, Event::ChildSaUp(_))),
            0,
            "node {n} installs no Child SA"
        );
    }
    // A request within the limit is narrowed and installed.
    let mut lab = Lab::pair(23, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    let mut request = connect_request();
    request.remote_ts = vec![ts::ipv6_any(); 3];
    let now = lab.now;
    lab.client().ep.connect(now, request);
    lab.run_for(Duration::from_secs(5));
    assert_eq!(
        count(&lab.nodes[1].events, |e| matches!(e, Event::ChildSaUp(_))),
        1
    );
}

/// The client's INFORMATIONAL requests to the broker (its Delete of the
/// Child SA it replaced, and DPDs) never arrive.
fn client_informational_requests(t: &sixgate_proto::endpoint::Transmit) -> bool {
    t.remote.ip().to_string() == BROKER && exchange_of(t) == Some((INFORMATIONAL, true))
}

#[test]
fn a_rekeyed_child_sa_the_peer_never_deletes_is_deleted_after_the_grace_time() {
    let mut broker = broker_config("ecdsa");
    broker.rekey_grace = Duration::from_secs(3);
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(24, client_config("ecdsa"), broker, &pool);
    let sa = lab.connect();
    lab.run_for(Duration::from_secs(5));
    let first = match lab.nodes[0].events.iter().find_map(|e| match e {
        Event::ChildSaUp(c) => Some(c.clone()),
        _ => None,
    }) {
        Some(c) => c,
        None => panic!("no Child SA: {:?}", lab.nodes[0].events),
    };
    lab.drop_if = Some(client_informational_requests);

    let now = lab.now;
    lab.client().ep.rekey_child_sa(now, sa, first.inbound_spi);
    lab.run_for(Duration::from_secs(1));
    let rekeyed: Vec<u32> = lab.nodes[1]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaRekeyed { new, .. } => Some(new.inbound_spi),
            _ => None,
        })
        .collect();
    assert_eq!(rekeyed.len(), 1);

    // The broker holds the old and the new SA: the limit (2) is reached,
    // so another rekey now is refused.
    let second = lab.nodes[0]
        .events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaRekeyed { new, .. } => Some(new.inbound_spi),
            _ => None,
        })
        .unwrap();
    let now = lab.now;
    lab.client().ep.rekey_child_sa(now, sa, second);
    lab.run_for(Duration::from_millis(500));
    assert_eq!(
        count(&lab.nodes[1].events, |e| matches!(
            e,
            Event::ChildSaRekeyed { .. }
        )),
        1,
        "the rekey beyond child_sas_per_ike_sa was refused"
    );

    // After the grace time the broker deletes the old SA itself; the
    // client's own Delete never arrived.
    let old_at_broker = first.outbound_spi;
    let deleted = lab.run_until(Duration::from_secs(4), |lab| {
        lab.nodes[1].events.iter().any(
            |e| matches!(e, Event::ChildSaDown { inbound_spi, .. } if *inbound_spi == old_at_broker),
        )
    });
    assert!(deleted, "{:?}", lab.nodes[1].events);
    assert!(
        down_reasons(&lab.nodes[1].events).is_empty(),
        "the IKE SA stays"
    );
}

#[test]
fn one_source_cannot_take_the_whole_half_open_table() {
    let mut broker = broker_config("ecdsa");
    broker.max_half_open = 40;
    broker.half_open_share = 10;
    broker.cookie_threshold = 1000;
    broker.half_open_per_source = 1000;
    let ips: Vec<String> = (0..12).map(|i| format!("192.0.2.{}", 10 + i)).collect();
    let mut configs: Vec<(&str, _)> = vec![(BROKER, broker)];
    for ip in &ips {
        configs.push((ip.as_str(), client_config("ecdsa")));
    }
    let mut lab = Lab::new(25, configs);
    lab.nodes[0].pool = Some(MemPool::new(64));
    // Every IKE_AUTH is lost: what IKE_SA_INIT opens stays half-open.
    lab.drop_if = Some(|t| exchange_of(t).is_some_and(|(x, request)| x == 35 && request));
    // Eleven IKE_SA_INITs from one address (one node reconnecting with
    // fresh SPIs): ten are answered, the eleventh is dropped.
    for _ in 0..11 {
        connect_from(&mut lab, 1, &ips[0], false);
        lab.deliver();
    }
    assert_eq!(lab.nodes[0].ep.stats().half_open_dropped, 1);
    // Another address still gets in.
    connect_from(&mut lab, 2, &ips[1], false);
    lab.deliver();
    assert_eq!(lab.nodes[0].ep.stats().half_open_dropped, 1);
}

#[test]
fn revoking_a_connected_identity_ends_its_sa_at_once() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(26, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    lab.connect();
    lab.run_for(Duration::from_secs(5));
    assert_eq!(ike_ups(&lab.nodes[1].events), 1);
    let mut revoked = Revocations::new();
    revoked.revoke_identity(CanonicalIdentity::parse("Client@example.net").unwrap());
    let now = lab.now;
    // Nothing is revoked that proves a different local part.
    assert!(lab.broker().ep.set_revocations(now, revoked).is_empty());

    let mut revoked = Revocations::new();
    revoked.revoke_identity(CanonicalIdentity::parse("client@EXAMPLE.net").unwrap());
    let ended = lab.broker().ep.set_revocations(now, revoked);
    assert_eq!(ended.len(), 1);
    // At once, without waiting for the peer (nothing is delivered before
    // the broker's events are read).
    lab.blackhole.push(CLIENT.parse().unwrap());
    lab.deliver();
    lab.blackhole.clear();
    assert_eq!(
        down_reasons(&lab.nodes[1].events),
        vec![DownReason::Revoked]
    );
    assert!(lab.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, Event::AddressReleased { .. })));
    // The client got the Delete (sent once, not retransmitted: deliver
    // it by hand, as the blackhole took it).
    let delete = lab.nodes[1].sent.last().cloned().unwrap();
    let now = lab.now;
    lab.client()
        .ep
        .handle(now, delete.local, delete.remote, &ike_message(&delete));
    lab.run_for(Duration::from_secs(1));
    assert_eq!(
        down_reasons(&lab.nodes[0].events),
        vec![DownReason::DeletedByPeer],
        "the client got the Delete"
    );
    // And it cannot come back.
    lab.connect();
    lab.run_for(Duration::from_secs(5));
    assert_eq!(
        down_reasons(&lab.nodes[0].events).last(),
        Some(&DownReason::RefusedByPeer(
            NotifyType::AUTHENTICATION_FAILED
        ))
    );
}

/// Two devices of one identity, the second connecting while the first is
/// up, without INITIAL_CONTACT (it is another device), under `unique`.
/// Returns the reasons each side's SAs went down and how many IKE SAs the
/// identity holds afterwards.
fn second_device(unique: Unique) -> (Vec<DownReason>, Vec<DownReason>, usize) {
    let ips = [CLIENT, "192.0.2.3"];
    let mut configs: Vec<(&str, _)> = ips.iter().map(|ip| (*ip, client_config("ecdsa"))).collect();
    let mut broker = broker_config("ecdsa");
    broker.unique = unique;
    configs.push((BROKER, broker));
    let mut lab = Lab::new(23, configs);
    lab.nodes[2].pool = Some(MemPool::new(8));
    for (i, ip) in ips.iter().enumerate() {
        connect_from(&mut lab, i, ip, false);
        lab.run_for(Duration::from_secs(5));
    }
    let identity = CanonicalIdentity::parse("client@example.net").unwrap();
    (
        down_reasons(&lab.nodes[0].events),
        down_reasons(&lab.nodes[1].events),
        lab.nodes[2].ep.ike_sas_of(&identity),
    )
}

#[test]
fn a_second_device_of_one_identity_under_each_unique_mode() {
    // replace (the default): the first device gets a Delete that says it
    // was replaced; the second is up.
    let (first, second, live) = second_device(Unique::Replace);
    assert_eq!(
        (first, second, live),
        (vec![DownReason::Replaced], vec![], 1)
    );
    // keep: the second is refused, the first stays.
    let (first, second, live) = second_device(Unique::Keep);
    assert_eq!(
        (first, second, live),
        (
            vec![],
            vec![DownReason::RefusedByPeer(NotifyType::AUTHENTICATION_FAILED)],
            1
        )
    );
    // never: both stay.
    let (first, second, live) = second_device(Unique::Never);
    assert_eq!((first, second, live), (vec![], vec![], 2));
}
