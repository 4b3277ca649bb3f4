//! What an unauthenticated or replaying peer can make the responder do,
//! in the in-memory lab: under load it asks for the cheapest group the
//! initiator offered before computing an expensive one, and it answers a
//! burst of copies of one request once.

mod common;

use std::time::Duration;

use common::lab::*;
use sixgate_proto::crypto::KeGroup;
use sixgate_proto::endpoint::Event;

fn suite_of(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::IkeSaUp { suite, .. } => Some(suite.to_string()),
        _ => None,
    })
}

#[test]
fn under_load_the_responder_asks_for_its_cheapest_group() {
    for (load, expected) in [(false, "modp3072"), (true, "curve25519")] {
        let mut client = client_config("ecdsa");
        // An initiator whose first choice costs the responder 100 times
        // more than another it also offers.
        client.ike_policy.ke = vec![KeGroup::Modp3072, KeGroup::Curve25519];
        let mut broker = broker_config("ecdsa");
        if load {
            // Cookies from the first half-open SA on: the responder is
            // under load.
            broker.cookie_threshold = 0;
        }
        let pool = MemPool::new(4);
        let mut lab = Lab::pair(31, client, broker, &pool);
        lab.connect();
        lab.run_for(Duration::from_secs(10));
        let suite = suite_of(&lab.nodes[1].events).expect("established");
        assert!(suite.contains(expected), "load {load}: {suite}");
        let stats = lab.nodes[1].ep.stats().clone();
        assert_eq!(stats.cheaper_group_asked, u64::from(load), "load {load}");
        assert_eq!(stats.cookies_sent, u64::from(load));
    }
}

#[test]
fn a_burst_of_copies_of_a_request_is_answered_once() {
    let pool = MemPool::new(4);
    let mut lab = Lab::pair(32, client_config("ecdsa"), broker_config("ecdsa"), &pool);
    lab.connect();
    lab.run_for(Duration::from_secs(5));
    assert!(suite_of(&lab.nodes[1].events).is_some());
    // The client's IKE_AUTH request, replayed 50 times at once.
    let auth = lab.nodes[0]
        .sent
        .iter()
        .find(|t| exchange_of(t) == Some((35, true)))
        .cloned()
        .expect("an IKE_AUTH request");
    let payload = ike_message(&auth);
    let before = lab.nodes[1].sent.len();
    let now = lab.now;
    for _ in 0..50 {
        lab.broker()
            .ep
            .handle(now, auth.local, auth.remote, &payload);
    }
    lab.deliver();
    let answers = lab.nodes[1].sent.len() - before;
    let stats = lab.nodes[1].ep.stats().clone();
    assert_eq!(answers, 1, "{stats:?}");
    assert_eq!(stats.retransmits_answered, 1);
    assert_eq!(stats.retransmits_rate_limited, 49);
    // A genuine retransmission later is answered again.
    lab.run_for(Duration::from_secs(1));
    let now = lab.now;
    lab.broker()
        .ep
        .handle(now, auth.local, auth.remote, &payload);
    lab.deliver();
    assert_eq!(lab.nodes[1].ep.stats().retransmits_answered, 2);
}
