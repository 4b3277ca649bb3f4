//! Ten thousand IKE SAs between two endpoints in the in-memory lab, on
//! its virtual clock: every one comes up, every Child SA is rekeyed once
//! inside its rekey window and the rekeys are spread over it by the
//! jitter, and when the broker goes silent every SA's liveness check
//! runs out and declares it dead on time. What it proves is that the
//! timers of 10,000 SAs fire when due, none early, none lost; not speed.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::lab::*;
use sixgate_proto::endpoint::{DownReason, Event, SaId, Unique};

const SAS: usize = 10_000;
const BATCH: usize = 250;
const CHILD_LIFETIME: Duration = Duration::from_secs(600);
const JITTER: Duration = Duration::from_secs(60);
const DPD: Duration = Duration::from_secs(120);

#[test]
fn ten_thousand_sas_rekey_and_time_out_when_due() {
    let s = Duration::from_secs;
    let mut client = client_config("ecdsa");
    client.child_lifetime = CHILD_LIFETIME;
    client.rekey_jitter = JITTER;
    client.ike_lifetime = s(24 * 3600);
    client.dpd_interval = DPD;
    let mut broker = broker_config("ecdsa");
    // One identity holds them all, from one address (as behind a CGNAT);
    // only the client rekeys (the broker's lifetimes are longer) and
    // only the client checks liveness.
    broker.unique = Unique::Never;
    broker.ike_sas_per_identity = SAS;
    broker.half_open_per_source = 2 * BATCH;
    broker.half_open_share = 2 * BATCH;
    broker.cookie_threshold = 2 * BATCH;
    broker.child_lifetime = s(4 * 3600);
    broker.ike_lifetime = s(24 * 3600);
    broker.dpd_interval = s(24 * 3600);
    let pool = MemPool::new(8);
    let mut lab = Lab::pair(31, client, broker, &pool);
    lab.storm_limit = 10 * SAS;

    let up = |lab: &Lab| count(&lab.nodes[0].events, |e| matches!(e, Event::IkeSaUp { .. }));
    for batch in 0..SAS / BATCH {
        for _ in 0..BATCH {
            let mut request = connect_request();
            request.initial_contact = false;
            request.local = SocketAddr::new(CLIENT.parse().unwrap(), 500);
            let now = lab.now;
            lab.nodes[0].ep.connect(now, request);
        }
        let want = (batch + 1) * BATCH;
        assert!(
            lab.run_until(s(30), |lab| up(lab) == want),
            "batch {batch}: {} of {want} up",
            up(&lab)
        );
    }
    assert_eq!(lab.nodes[0].ep.ike_sa_count(), SAS);
    assert_eq!(lab.nodes[1].ep.ike_sa_count(), SAS);
    let up_at: HashMap<SaId, Instant> = events_at(&lab, 0)
        .filter_map(|(t, e)| match e {
            Event::IkeSaUp { sa, .. } => Some((*sa, t)),
            _ => None,
        })
        .collect();
    assert_eq!(up_at.len(), SAS);
    let last_up = *up_at.values().max().unwrap();

    // Past every SA's lifetime: each rekeyed once, inside its window.
    lab.run_for(last_up + CHILD_LIFETIME + s(5) - lab.now);
    let mut rekeyed: HashMap<SaId, Vec<Instant>> = HashMap::new();
    for (t, e) in events_at(&lab, 0) {
        if let Event::ChildSaRekeyed { new, .. } = e {
            rekeyed.entry(new.ike_sa).or_default().push(t);
        }
    }
    assert_eq!(rekeyed.len(), SAS, "every SA rekeyed");
    let window = CHILD_LIFETIME - JITTER..=CHILD_LIFETIME + s(1);
    let mut buckets = [0usize; 6];
    for (sa, times) in &rekeyed {
        assert_eq!(times.len(), 1, "{sa:?} rekeyed {} times", times.len());
        let after = times[0] - up_at[sa];
        assert!(
            window.contains(&after),
            "{sa:?} rekeyed {after:?} after it came up"
        );
        let bucket = (after.saturating_sub(CHILD_LIFETIME - JITTER)).as_secs() / 10;
        buckets[(bucket as usize).min(5)] += 1;
    }
    // Spread by the jitter: no ten seconds of the window with more than
    // twice the average.
    let average = SAS / buckets.len();
    assert!(
        buckets.iter().all(|b| *b <= 2 * average && *b > 0),
        "rekeys per 10 s of the window: {buckets:?}"
    );
    assert_eq!(
        lab.nodes[1].ep.ike_sa_count(),
        SAS,
        "no SA lost on the broker"
    );

    // The broker goes silent: each SA's liveness check starts within
    // DPD of the last word from it, and runs out after five
    // retransmissions (2 + 4 + 8 + 16 + 32 + 64 s).
    let silent = lab.now;
    lab.blackhole.push(BROKER.parse().unwrap());
    let retransmissions = s(126);
    lab.run_for(DPD + retransmissions + s(10));
    let dead: Vec<Instant> = events_at(&lab, 0)
        .filter_map(|(t, e)| match e {
            Event::IkeSaDown {
                reason: DownReason::PeerDead,
                ..
            } => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(dead.len(), SAS, "every SA found dead");
    for t in &dead {
        let after = *t - silent;
        assert!(
            after >= retransmissions - s(1) && after <= DPD + retransmissions + s(1),
            "declared dead {after:?} after the broker went silent"
        );
    }
    assert_eq!(lab.nodes[0].ep.ike_sa_count(), 0);
}

fn events_at(lab: &Lab, node: usize) -> impl Iterator<Item = (Instant, &Event)> {
    let n = &lab.nodes[node];
    n.event_times.iter().copied().zip(&n.events)
}
