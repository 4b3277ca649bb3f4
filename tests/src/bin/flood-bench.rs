//! The broker under an IKE_SA_INIT flood, in the lab of the end-to-end
//! tests: Debian's ike-scan sends IKEv2 requests from random source
//! addresses as fast as it can for SECONDS (default 10) while a connected
//! client pings through the tunnel. Prints, idle and flooded, the requests
//! arriving per second, those the broker answered, the broker's CPU, and
//! the pings' loss and round-trip time.
//!
//! Run as root from a release build:
//! `cargo build --release --workspace && target/release/flood-bench [SECONDS]`

use std::time::{Duration, Instant};

use sixgate_tests::{control_request, cpu_time, Flood, TunnelLab};

struct Phase {
    arrived: f64,
    answered: f64,
    cpu: f64,
    pings: (u32, u32),
    rtt_ms: f64,
}

/// Pings through the tunnel for `seconds` and measures the broker meanwhile.
fn measure(lab: &TunnelLab, broker_pid: u32, seconds: u32, arrived: &dyn Fn() -> u64) -> Phase {
    let socket = lab.dir.path().join("broker-state/broker.sock");
    let answered = || {
        let stats = control_request(&socket, &serde_json::json!("Stats"));
        let ike = &stats["Stats"]["runtime"]["ike"];
        ["inits_refused", "cookies_sent", "cheaper_group_asked"]
            .iter()
            .map(|k| ike[k].as_u64().expect("stats"))
            .sum::<u64>()
    };
    let (t0, cpu0, arrived0, answered0) =
        (Instant::now(), cpu_time(broker_pid), arrived(), answered());
    let ping = lab.ping_summary(0, seconds * 50);
    let elapsed = t0.elapsed().as_secs_f64();
    Phase {
        arrived: (arrived() - arrived0) as f64 / elapsed,
        answered: (answered() - answered0) as f64 / elapsed,
        cpu: (cpu_time(broker_pid) - cpu0).as_secs_f64() / elapsed,
        pings: (ping.received, ping.sent),
        rtt_ms: ping.rtt_ms.unwrap_or(f64::NAN),
    }
}

fn main() {
    let seconds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let lab = TunnelLab::new(2);
    let pair = lab.start_pair("", "", Duration::from_secs(30));
    let arrived = lab
        .broker
        .packet_counter("prerouting", "udp dport 500 ip saddr != 192.0.2.0/24");
    let pid = pair.broker.pid();
    let idle = measure(&lab, pid, seconds, &arrived);
    let mut flood = Flood::start(&lab, 1, 100_000 * seconds as usize);
    let flooded = measure(&lab, pid, seconds, &arrived);
    if !flood.running() {
        eprintln!("warning: ike-scan ended before the measurement did");
    }
    println!("| phase | IKE_SA_INIT/s arriving | answered/s | answered/arriving | broker CPU | pings | ping RTT |");
    println!("|---|---|---|---|---|---|---|");
    for (name, p) in [("idle", &idle), ("flood", &flooded)] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0}% | {:.0}% of a core | {}/{} | {:.3} ms |",
            p.arrived,
            p.answered,
            if p.arrived > 0.0 {
                100.0 * p.answered / p.arrived
            } else {
                0.0
            },
            100.0 * p.cpu,
            p.pings.0,
            p.pings.1,
            p.rtt_ms
        );
    }
    if flooded.cpu > 0.0 {
        println!(
            "\nper request answered: {:.1} µs of broker CPU",
            1e6 * flooded.cpu / flooded.answered.max(1.0)
        );
    }
}
