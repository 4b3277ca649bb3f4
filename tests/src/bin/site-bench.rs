//! Time per `site add` (and a `site remove` after each) through a running
//! broker with `[sites]` on wireguard-go, in a namespace, checking for
//! leaked routes, rules and peers along the way.
//!
//! `cargo build --release --workspace && target/release/site-bench [N]` (root)

use std::time::Duration;

use sixgate_tests::{
    sites_add_remove_loop, sites_broker_config, wait_for, workspace_bin, Daemon, Netns, TempDir,
};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let broker = Netns::new("sgbench");
    let upstream = Netns::new("sgbenchu");
    sixgate_tests::link(&broker, "192.0.2.1/24", &upstream, "192.0.2.2/24");
    let uplink = broker.run(&["ip", "-o", "link", "show", "type", "veth"]);
    let uplink = uplink
        .split(':')
        .nth(1)
        .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let dir = TempDir::new("sgsitebench");
    let wg = sixgate_tests::unique("sgw");
    let config = sites_broker_config(dir.path(), &wg, &uplink, Some(100));
    let config = config.to_str().expect("path");
    let mut daemon = Daemon::spawn(
        &broker,
        &workspace_bin("sixgate-broker"),
        &["run", "--config", config],
        dir.path().join("broker.log"),
    );
    let socket = dir.path().join("state/broker.sock");
    if wait_for(Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket)
            .ok()
            .map(|_| ())
    })
    .is_none()
    {
        eprintln!("the broker did not start:\n{}", daemon.log_text());
        std::process::exit(1);
    }
    let per_add = sites_add_remove_loop(&broker, &socket, &wg, n, 100);
    println!("sites added and removed: {n}");
    println!(
        "time per site add:       {:.2} ms",
        per_add.as_secs_f64() * 1e3
    );
    daemon.terminate(Duration::from_secs(10));
}
