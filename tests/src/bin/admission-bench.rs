//! Admission under a slow disk: N clients (default 200) connect at once
//! to a broker runtime whose lease store is sixgate-broker's sled store
//! with every flush slowed by 50 ms (a wrapper). Prints the total time to
//! admit them all against the N x 50 ms that one flush per admission would
//! take, the flushes the store saw, and the IKE retransmissions (there
//! should be none: no client waits for another's write).
//!
//! ```text
//! cargo run --release -p sixgate-tests --bin admission-bench [N]
//! ```
//! Loopback UDP on 127.20.x.y; no root needed.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sixgate_broker::leases::{Leases, SledLeaseStore};
use sixgate_proto::endpoint::Event;
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_runtime::admission::LeaseStore;
use sixgate_tests::loopback::*;

const FLUSH: Duration = Duration::from_millis(50);

/// The sled store, each flush 50 ms slower.
struct SlowFlush {
    inner: Leases,
    flushes: Arc<AtomicU64>,
}

impl LeaseStore for SlowFlush {
    fn assign(&mut self, identity: &CanonicalIdentity) -> io::Result<Option<Ipv6Addr>> {
        self.inner.assign(identity)
    }
    fn release(&mut self, identity: &CanonicalIdentity, address: Ipv6Addr) -> io::Result<()> {
        self.inner.release(identity, address)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(FLUSH);
        self.inner.flush()
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n));
}

async fn run(n: u32) {
    let ca = ca();
    let dir = sixgate_tests::TempDir::new("sgadmit");
    let store = SledLeaseStore::open(
        dir.path(),
        "2001:db8:100::".parse().expect("literal"),
        1 << 16,
        &[],
    )
    .expect("sled");
    let flushes = Arc::new(AtomicU64::new(0));
    let leases = SlowFlush {
        inner: Leases(Arc::new(store)),
        flushes: flushes.clone(),
    };
    let b_ip: IpAddr = "127.20.0.1".parse().expect("literal");
    let broker = broker(
        &ca,
        b_ip,
        TestPlane::new(Duration::ZERO, vec![]),
        Box::new(leases),
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..n {
        let c_ip: IpAddr = format!("127.20.{}.{}", 1 + i / 250, 1 + i % 250)
            .parse()
            .expect("address");
        let plane = TestPlane::new(Duration::ZERO, vec![]);
        let c = client(&ca, c_ip, &format!("c{i}@example.net"), plane).await;
        clients.push((c_ip, c));
    }
    let start = Instant::now();
    for (c_ip, c) in &clients {
        connect(c, connect_request(*c_ip, b_ip)).await;
    }
    for (_, c) in &mut clients {
        wait_event(&mut c.events, |e| matches!(e, Event::ChildSaUp(_))).await;
    }
    let total = start.elapsed();
    let mut retransmits = 0;
    for (_, c) in &clients {
        retransmits += stats(c).await.ike.retransmits_sent;
    }
    let b = stats(&broker).await;
    let serial = FLUSH * n;
    println!(
        "| clients | admitted in | one flush each would take | ratio | flushes | retransmissions |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.2} s | {:.1} s | {:.3} | {} | {retransmits} |",
        total.as_secs_f64(),
        serial.as_secs_f64(),
        total.as_secs_f64() / serial.as_secs_f64(),
        flushes.load(Ordering::Relaxed),
    );
    assert_eq!(b.leases_assigned, u64::from(n), "every client got a lease");
}
