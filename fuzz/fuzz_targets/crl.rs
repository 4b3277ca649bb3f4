//! CRL files (PEM or DER) checked against the example CA and used.
#![no_main]
use std::sync::OnceLock;

use sixgate_proto::cert::{certificates_from_pem, TrustAnchors};

/// The time the policy fixtures' CRLs are in force (tests/common NOW).
const NOW: i64 = 1_780_272_000;

fn anchors() -> &'static TrustAnchors {
    static ANCHORS: OnceLock<TrustAnchors> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let ca = certificates_from_pem(include_bytes!("../../certs-example/ecdsa/ca.pem")).unwrap();
        TrustAnchors::new(ca).unwrap()
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| sixgate_proto::fuzzing::crl(anchors(), NOW, data));
