//! Arbitrary datagrams against a responder endpoint: no panic, bounded state.
#![no_main]
use std::sync::{Arc, OnceLock};

use sixgate_proto::auth::PrivateKey;
use sixgate_proto::cert::{certificates_from_pem, TrustAnchors};
use sixgate_proto::endpoint::Config;
use sixgate_proto::wire::Identification;

fn config() -> Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let chain = certificates_from_pem(include_bytes!("../../certs-example/ecdsa/broker.pem")).unwrap();
            let key = PrivateKey::from_pem(include_bytes!("../../certs-example/ecdsa/broker.key")).unwrap();
            let ca = certificates_from_pem(include_bytes!("../../certs-example/ecdsa/ca.pem")).unwrap();
            let mut c = Config::new(Identification::fqdn("broker.example.net"), chain, Arc::new(key), TrustAnchors::new(ca).unwrap());
            c.max_half_open = 16;
            c.cookie_threshold = 8;
            Arc::new(c)
        })
        .clone()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| sixgate_proto::fuzzing::responder(config(), data));
