//! The data plane against strongSwan (charon with kernel-libipsec, which
//! carries ESP in UDP like sixgate's userspace plane): a strongSwan client
//! through the sixgate broker, and the sixgate client through a strongSwan
//! broker, each pinging the IPv6 host behind the broker and moving TCP
//! both ways. Root, namespaces, the workspace binaries, iperf3.

use std::time::Duration;

use sixgate_tests::{wait_for, StrongSwan, SwanConnection, SwanMode, TunnelLab};

const UP: Duration = Duration::from_secs(30);

fn tcp_both_ways(lab: &TunnelLab) {
    for reverse in [false, true] {
        lab.iperf(0, 2, reverse)
            .unwrap_or_else(|e| panic!("iperf3 reverse={reverse}: {e}"));
    }
}

#[test]
fn strongswan_client_through_the_sixgate_broker() {
    let lab = TunnelLab::new(1);
    let bconf = lab.broker_config("2001:db8:100::100/120", &[], "");
    let broker = lab.start_broker(&bconf);
    let conf = SwanConnection::default().client();
    let swan = StrongSwan::start_client(&lab.clients[0], &conf, SwanMode::Routes);
    swan.initiate(20, &broker.log_text());
    let sas = swan.swanctl(&["--list-sas"]);
    assert!(sas.contains("2001:db8:100::100"), "{sas}");
    let ok = wait_for(UP, || lab.ping(0, 3).then_some(()));
    assert!(
        ok.is_some(),
        "ping: {}\n{}",
        lab.clients[0].run(&["ip", "-6", "route", "show", "table", "all"]),
        broker.log_text()
    );
    tcp_both_ways(&lab);
    let status = lab.broker_cli(&["status"], &bconf);
    assert!(status.contains("client@example.net"), "{status}");
}

#[test]
fn sixgate_client_through_a_strongswan_broker() {
    let lab = TunnelLab::new(1);
    let (_swan, _client, _config, address) = lab.sixgate_client_of_a_strongswan_broker(UP);
    assert!(address.starts_with("2001:db8:100::"), "{address}");
    let ok = wait_for(UP, || lab.ping(0, 3).then_some(()));
    assert!(
        ok.is_some(),
        "ping: {}",
        lab.broker
            .run(&["ip", "-6", "route", "show", "table", "all"])
    );
    tcp_both_ways(&lab);
}
