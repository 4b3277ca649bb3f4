//! Real bytes: IKE_SA_INIT and IKE_AUTH datagrams captured between two
//! strongSwan 5.9.8 instances (tests/lab/capture-strongswan.sh) parse and
//! emit back to the identical bytes; with the keys charon logged, the
//! IKE_AUTH payloads decrypt (and reassemble, when fragmented) and both
//! AUTH payloads verify against the certificates inside.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use sixgate_proto::auth::{self, signed_octets};
use sixgate_proto::cert::{Purpose, TrustAnchors};
use sixgate_proto::crypto::sk::{Reassembly, SkCipher};
use sixgate_proto::crypto::{Encryption, IkeSaKeys, Integrity, KeGroup, Legacy, Prf, Suite};
use sixgate_proto::wire::*;

const CASES: [(&str, &str); 4] = [
    ("default-ecdsa", "ecdsa"),
    ("gcm-rsa", "rsa"),
    ("cbc-modp-rsa", "rsa"),
    ("frag-ecdsa", "ecdsa"),
];

fn keys(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("keys.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn suite(k: &BTreeMap<String, String>) -> Suite {
    let encr = match k["encr"].as_str() {
        "AES_CBC_128" => Encryption::AesCbc { key_bits: 128 },
        "AES_CBC_256" => Encryption::AesCbc { key_bits: 256 },
        "AES_GCM_16_256" => Encryption::AesGcm16 { key_bits: 256 },
        e => panic!("{e}"),
    };
    let integ = match k["integ"].as_str() {
        "none" => None,
        "HMAC_SHA2_256_128" => Some(Integrity::HmacSha256_128),
        i => panic!("{i}"),
    };
    let prf = match k["prf"].as_str() {
        "PRF_HMAC_SHA2_256" => Prf::HmacSha256,
        "PRF_HMAC_SHA2_384" => Prf::HmacSha384,
        p => panic!("{p}"),
    };
    let ke = match k["dh"].as_str() {
        "CURVE_25519" => KeGroup::Curve25519,
        "ECP_384" => KeGroup::Ecp384,
        "MODP_2048" => KeGroup::Modp2048,
        d => panic!("{d}"),
    };
    Suite {
        encr,
        integ,
        prf,
        ke,
    }
}

fn hex(k: &BTreeMap<String, String>, name: &str) -> Vec<u8> {
    hex::decode(&k[name]).unwrap()
}

/// The datagrams of a case, in capture order: (file name, bytes).
fn datagrams(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn captured_messages_parse_and_emit_identically() {
    let mut count = 0;
    for (case, _) in CASES {
        for (name, bytes) in datagrams(&common::data_dir().join("strongswan").join(case)) {
            let msg = Message::parse(&bytes).unwrap_or_else(|e| panic!("{case}/{name}: {e}"));
            assert_eq!(msg.emit().unwrap(), bytes, "{case}/{name}");
            count += 1;
        }
    }
    assert!(count >= 20, "{count}");
}

#[test]
fn captured_ike_auth_decrypts_and_both_auth_payloads_verify() {
    for (case, kind) in CASES {
        let dir = common::data_dir().join("strongswan").join(case);
        let k = keys(&dir);
        let suite = suite(&k);
        let (ni, nr) = (hex(&k, "nonce_i"), hex(&k, "nonce_r"));
        let spi_i = u64::from_str_radix(&k["spi_i"], 16).unwrap();
        let spi_r = u64::from_str_radix(&k["spi_r"], 16).unwrap();

        // Our derivation from the logged SKEYSEED gives charon's keys.
        let derived = IkeSaKeys::derive(&suite, &hex(&k, "skeyseed"), &ni, &nr, spi_i, spi_r);
        for (name, ours) in [
            ("sk_d", &derived.sk_d),
            ("sk_ai", &derived.sk_ai),
            ("sk_ar", &derived.sk_ar),
            ("sk_ei", &derived.sk_ei),
            ("sk_er", &derived.sk_er),
            ("sk_pi", &derived.sk_pi),
            ("sk_pr", &derived.sk_pr),
        ] {
            assert_eq!(ours, &hex(&k, name), "{case}: {name}");
        }

        let all = datagrams(&dir);
        let init_request = &all[0].1;
        let init_response = &all[1].1;
        assert_eq!(
            Header::peek(init_request).unwrap().exchange,
            ExchangeType::IKE_SA_INIT
        );
        let from_i =
            SkCipher::new(suite.encr, suite.integ, &derived.sk_ei, &derived.sk_ai).unwrap();
        let from_r =
            SkCipher::new(suite.encr, suite.integ, &derived.sk_er, &derived.sk_ar).unwrap();
        let (mut ri, mut rr) = (Reassembly::default(), Reassembly::default());
        let (mut request, mut response) = (None, None);
        for (name, bytes) in &all[2..] {
            let header = Header::peek(bytes).unwrap();
            assert_eq!(header.exchange, ExchangeType::IKE_AUTH, "{name}");
            let (cipher, reassembly, slot) = if header.flags.response() {
                (&from_r, &mut rr, &mut response)
            } else {
                (&from_i, &mut ri, &mut request)
            };
            let opened = cipher
                .open(bytes)
                .unwrap_or_else(|e| panic!("{case}/{name}: {e}"));
            let whole = if opened.fragment.is_some() {
                reassembly.add(opened.header.message_id, opened).unwrap()
            } else {
                Some((opened.first_payload, opened.plaintext))
            };
            if let Some((first, plain)) = whole {
                *slot = Some(
                    parse_chain(first, &plain).unwrap_or_else(|e| panic!("{case}/{name}: {e}")),
                );
            }
        }
        let anchors = TrustAnchors::new(common::certs(&format!("{kind}/ca.pem"))).unwrap();
        for (payloads, real_message, nonce, sk_p, expected_id, purpose) in [
            (
                request.expect("IKE_AUTH request"),
                init_request,
                &nr,
                &derived.sk_pi,
                "client@example.net",
                Purpose::Client,
            ),
            (
                response.expect("IKE_AUTH response"),
                init_response,
                &ni,
                &derived.sk_pr,
                "broker.example.net",
                Purpose::Server,
            ),
        ] {
            let id = payloads
                .iter()
                .find_map(|p| match &p.body {
                    PayloadBody::IdI(i) | PayloadBody::IdR(i) => Some(i.clone()),
                    _ => None,
                })
                .unwrap();
            assert!(
                matches!(id.identity(), Identity::Fqdn(s) | Identity::Rfc822(s) if s == expected_id),
                "{case}: {id:?}"
            );
            let certs: Vec<Vec<u8>> = payloads
                .iter()
                .filter_map(|p| match &p.body {
                    PayloadBody::Cert(c) => Some(c.data.clone()),
                    _ => None,
                })
                .collect();
            let auth = payloads
                .iter()
                .find_map(|p| match &p.body {
                    PayloadBody::Auth(a) => Some(a.clone()),
                    _ => None,
                })
                .unwrap();
            let leaf = anchors
                .validate(&certs, common::NOW, purpose, Legacy::Refuse)
                .unwrap()
                .leaf;
            sixgate_proto::cert::match_identity(leaf, &id).unwrap();
            let octets = signed_octets(real_message, nonce, suite.prf, sk_p, &id.body());
            auth::verify(&auth, &octets, leaf, Legacy::Refuse)
                .unwrap_or_else(|e| panic!("{case} {expected_id}: {e}"));
            let mut wrong = octets.clone();
            wrong[0] ^= 1;
            assert!(auth::verify(&auth, &wrong, leaf, Legacy::Refuse).is_err());
            println!(
                "{case}: {expected_id} authenticated with {:?} ({} certificate)",
                auth.method, kind
            );
        }
    }
}
