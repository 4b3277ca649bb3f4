//! The runtime acts on the engine's events in the right order: a Child SA
//! is installed before the response that announces it leaves, and one the
//! data plane refuses is taken back with the peer. Loopback UDP, no root.

use std::net::IpAddr;
use std::time::Duration;

use sixgate_proto::endpoint::{DownReason, Event};
use sixgate_tests::loopback::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_sa_is_installed_before_the_response_that_announces_it_leaves() {
    let ca = ca();
    let (b_ip, c_ip) = (ip("127.10.0.1"), ip("127.10.0.2"));
    // Installs take 300 ms on the broker: long enough that a response sent
    // first would be installed by the client well before.
    let broker_plane = TestPlane::new(Duration::from_millis(300), vec![]);
    let client_plane = TestPlane::new(Duration::ZERO, vec![]);
    let (leases, _) = MemLeases::new(Duration::ZERO);
    let _broker = broker(&ca, b_ip, broker_plane.clone(), leases).await;
    let mut client = client(&ca, c_ip, "alice@example.net", client_plane.clone()).await;
    connect(&client, connect_request(c_ip, b_ip)).await;
    wait_event(&mut client.events, |e| matches!(e, Event::ChildSaUp(_))).await;
    let (b, c) = (broker_plane.installs(), client_plane.installs());
    assert_eq!((b.len(), c.len()), (1, 1));
    assert!(
        b[0].at <= c[0].at,
        "the client had the response (and installed) before the broker had installed"
    );
    assert_eq!(stats(&client).await.ike.retransmits_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_install_deletes_the_child_sa_with_the_peer() {
    let ca = ca();
    let (b_ip, c_ip) = (ip("127.10.1.1"), ip("127.10.1.2"));
    // The first install fails (the IKE_AUTH Child SA); after the client
    // comes back, the second (its new Child SA) works, and the third (the
    // rekey of it) fails again.
    let broker_plane = TestPlane::new(Duration::ZERO, vec![0, 2]);
    let (leases, _) = MemLeases::new(Duration::ZERO);
    let broker = broker(&ca, b_ip, broker_plane.clone(), leases).await;
    let mut client = client(
        &ca,
        c_ip,
        "alice@example.net",
        TestPlane::new(Duration::ZERO, vec![]),
    )
    .await;
    let first = connect(&client, connect_request(c_ip, b_ip)).await;
    let down = wait_event(&mut client.events, |e| matches!(e, Event::IkeSaDown { .. })).await;
    assert!(
        matches!(
            &down,
            Event::IkeSaDown { sa, peer: Some(p), reason: DownReason::DeletedByPeer, .. }
                if *sa == first && p == "broker.example.net"
        ),
        "the client learns at once that its tunnel does not work: {down:?}"
    );
    assert_eq!(stats(&broker).await.install_failures, 1);
    assert!(broker_plane.installs().is_empty());

    // Again: installed this time; then its rekey fails to install.
    let second = connect(&client, connect_request(c_ip, b_ip)).await;
    let up = wait_event(&mut client.events, |e| matches!(e, Event::ChildSaUp(_))).await;
    let Event::ChildSaUp(child) = up else {
        unreachable!()
    };
    client
        .commands
        .send(sixgate_runtime::engine::Command::RekeyChildSa(
            second,
            child.inbound_spi,
        ))
        .unwrap();
    let down = wait_event(&mut client.events, |e| matches!(e, Event::IkeSaDown { .. })).await;
    assert!(
        matches!(
            &down,
            Event::IkeSaDown { sa, reason: DownReason::DeletedByPeer, .. } if *sa == second
        ),
        "{down:?}"
    );
    assert_eq!(stats(&broker).await.install_failures, 2);
    assert_eq!(broker_plane.installs().len(), 1);
}

/// Admission while the lease store's flush takes 50 ms: the writes of
/// concurrent clients share flushes, and nobody's IKE waits for another's
/// disk (no retransmission anywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admissions_share_flushes_and_nobody_retransmits() {
    const CLIENTS: u8 = 30;
    let ca = ca();
    let b_ip = ip("127.10.2.1");
    let (leases, flushes) = MemLeases::new(Duration::from_millis(50));
    let broker = broker(&ca, b_ip, TestPlane::new(Duration::ZERO, vec![]), leases).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let c_ip = ip(&format!("127.10.3.{}", i + 1));
        let plane = TestPlane::new(Duration::ZERO, vec![]);
        let c = client(&ca, c_ip, &format!("c{i}@example.net"), plane).await;
        clients.push((c_ip, c));
    }
    for (c_ip, c) in &clients {
        connect(c, connect_request(*c_ip, b_ip)).await;
    }
    for (_, c) in &mut clients {
        wait_event(&mut c.events, |e| matches!(e, Event::ChildSaUp(_))).await;
    }
    for (_, c) in &clients {
        assert_eq!(stats(c).await.ike.retransmits_sent, 0);
    }
    let b = stats(&broker).await;
    assert_eq!(b.leases_assigned, u64::from(CLIENTS));
    let flushes = flushes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        flushes < u64::from(CLIENTS),
        "{flushes} flushes for {CLIENTS} admissions: writes were not grouped"
    );
}
