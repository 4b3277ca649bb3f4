//! Known-answer tests from the RFCs (vectors in tests/data/kat/).

mod common;

use common::{hex, kat};
use sixgate_proto::auth::SignatureScheme;
use sixgate_proto::crypto::{Encryption, Integrity, KeGroup, KeyExchangeSecret, Prf};

#[test]
fn rfc7748_x25519() {
    let mut checked = 0;
    for case in kat("x25519.txt") {
        if case.contains_key("scalar") {
            let me = KeyExchangeSecret::from_private(KeGroup::Curve25519, &hex(&case, "scalar"))
                .unwrap();
            assert_eq!(*me.agree(&hex(&case, "u")).unwrap(), hex(&case, "output"));
        } else if let Some(n) = case.get("iterations") {
            // k = u = 9; repeatedly k, u = X25519(k, u), k.
            let mut k = [0u8; 32];
            k[0] = 9;
            let mut u = k;
            for _ in 0..n.parse::<u32>().unwrap() {
                let next = KeyExchangeSecret::from_private(KeGroup::Curve25519, &k)
                    .unwrap()
                    .agree(&u)
                    .unwrap();
                u = k;
                k.copy_from_slice(&next);
            }
            assert_eq!(k.to_vec(), hex(&case, "output"), "{n} iterations");
        } else {
            let a = KeyExchangeSecret::from_private(KeGroup::Curve25519, &hex(&case, "a_priv"))
                .unwrap();
            let b = KeyExchangeSecret::from_private(KeGroup::Curve25519, &hex(&case, "b_priv"))
                .unwrap();
            assert_eq!(a.public_value(), hex(&case, "a_pub"));
            assert_eq!(b.public_value(), hex(&case, "b_pub"));
            assert_eq!(
                *a.agree(&hex(&case, "b_pub")).unwrap(),
                hex(&case, "shared")
            );
            assert_eq!(
                *b.agree(&hex(&case, "a_pub")).unwrap(),
                hex(&case, "shared")
            );
        }
        checked += 1;
    }
    assert!(checked >= 4);
}

#[test]
fn rfc5903_ecp_groups() {
    let mut checked = 0;
    for case in kat("ecp.txt").into_iter().filter(|c| c.contains_key("i")) {
        let group = match case["group"].as_str() {
            "19" => KeGroup::Ecp256,
            "20" => KeGroup::Ecp384,
            g => panic!("group {g}"),
        };
        let i = KeyExchangeSecret::from_private(group, &hex(&case, "i")).unwrap();
        let r = KeyExchangeSecret::from_private(group, &hex(&case, "r")).unwrap();
        let gi = [hex(&case, "gix"), hex(&case, "giy")].concat();
        let gr = [hex(&case, "grx"), hex(&case, "gry")].concat();
        assert_eq!(i.public_value(), gi, "{group:?} g^i");
        assert_eq!(r.public_value(), gr, "{group:?} g^r");
        // RFC 5903 9: the shared secret is the x coordinate of g^ir.
        assert_eq!(*i.agree(&gr).unwrap(), hex(&case, "girx"), "{group:?}");
        assert_eq!(*r.agree(&gi).unwrap(), hex(&case, "girx"), "{group:?}");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn rfc4868_hmac_sha2_prf_and_integrity() {
    let mut checked = 0;
    for case in kat("hmac_sha2.txt") {
        let (key, data, out) = (hex(&case, "key"), hex(&case, "data"), hex(&case, "out"));
        let alg = case["alg"].as_str();
        if let Some(prf) = match alg {
            "prf-hmac-sha2-256" => Some(Prf::HmacSha256),
            "prf-hmac-sha2-384" => Some(Prf::HmacSha384),
            "prf-hmac-sha2-512" => Some(Prf::HmacSha512),
            _ => None,
        } {
            assert_eq!(*prf.compute(&key, &[&data]), out, "{alg}");
        } else {
            let integ = match alg {
                "auth-hmac-sha2-256-128" => Integrity::HmacSha256_128,
                "auth-hmac-sha2-384-192" => Integrity::HmacSha384_192,
                "auth-hmac-sha2-512-256" => Integrity::HmacSha512_256,
                other => panic!("unknown alg {other}"),
            };
            let mut icv = vec![0; integ.icv_len()];
            integ.key(&key).sign_into(&[&data], &mut icv);
            assert_eq!(icv, out, "{alg}");
            assert!(integ.key(&key).verify(&[&data], &out));
        }
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
}

#[test]
fn rfc7634_chacha20_poly1305() {
    let mut checked = 0;
    for case in kat("chacha20poly1305.txt") {
        let keymat = [hex(&case, "key"), hex(&case, "salt")].concat();
        let key = Encryption::ChaCha20Poly1305.key(&keymat).unwrap();
        let (iv, aad) = (hex(&case, "iv"), hex(&case, "aad"));
        let mut buf = hex(&case, "plaintext");
        let mut tag = [0u8; 16];
        key.seal(&iv, &aad, &mut buf, &mut tag).unwrap();
        assert_eq!(buf, hex(&case, "ciphertext"), "{}", case["use"]);
        assert_eq!(tag.to_vec(), hex(&case, "tag"), "{}", case["use"]);
        let len = key.open(&iv, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf[..len], hex(&case, "plaintext"));
        checked += 1;
    }
    assert_eq!(checked, 2, "the ESP and the IKEv2 example");
}

#[test]
fn rfc3526_modp_groups() {
    let mut checked = 0;
    for case in kat("modp.txt") {
        let group = match case["group"].as_str() {
            "2" => KeGroup::Modp1024,
            "14" => KeGroup::Modp2048,
            "15" => KeGroup::Modp3072,
            g => panic!("group {g}"),
        };
        assert_eq!(group.modp_prime().unwrap(), hex(&case, "p"), "{group:?}");
        assert_eq!(hex(&case, "g"), vec![2]);
        assert_eq!(group.public_len(), hex(&case, "p").len());
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn rfc7427_algorithm_identifiers() {
    let mut checked = 0;
    for case in kat("rfc7427.txt") {
        let name = case["name"].to_ascii_lowercase();
        let der = hex(&case, "der");
        let ours = match name.as_str() {
            "sha256withrsaencryption" => Some(SignatureScheme::RsaPkcs1Sha256),
            "sha384withrsaencryption" => Some(SignatureScheme::RsaPkcs1Sha384),
            "sha512withrsaencryption" => Some(SignatureScheme::RsaPkcs1Sha512),
            "ecdsa-with-sha256" => Some(SignatureScheme::EcdsaSha256),
            "ecdsa-with-sha384" => Some(SignatureScheme::EcdsaSha384),
            "ecdsa-with-sha512" => Some(SignatureScheme::EcdsaSha512),
            n if n.starts_with("rsassa-pss") && n.contains("sha256") => {
                Some(SignatureScheme::RsaPssSha256)
            }
            _ => None,
        };
        match ours {
            Some(scheme) => {
                assert_eq!(
                    SignatureScheme::from_algorithm_identifier(&der),
                    Some(scheme),
                    "{name}"
                );
                if !name.contains("empty") && !name.starts_with("rsassa-pss") {
                    assert_eq!(scheme.algorithm_identifier(), der, "{name}");
                }
                checked += 1;
            }
            // SHA-1 and DSA: recognised by nobody here, refused.
            None => assert_eq!(
                SignatureScheme::from_algorithm_identifier(&der),
                None,
                "{name}"
            ),
        }
    }
    assert!(checked >= 7, "{checked}");
}

#[test]
fn rfc5903_ke_payloads_parse_to_their_public_values() {
    use sixgate_proto::wire::{parse_chain, KeyExchange, PayloadBody, PayloadType, TransformId};
    let cases = kat("ecp.txt");
    let points: Vec<Vec<u8>> = cases
        .iter()
        .filter(|c| c.contains_key("i"))
        .flat_map(|c| {
            [
                [hex(c, "gix"), hex(c, "giy")].concat(),
                [hex(c, "grx"), hex(c, "gry")].concat(),
            ]
        })
        .collect();
    let mut checked = 0;
    for case in cases.iter().filter(|c| c.contains_key("ke_payload")) {
        let bytes = hex(case, "ke_payload");
        let payloads = parse_chain(PayloadType::KE, &bytes).unwrap();
        let group: u16 = case["group"].parse().unwrap();
        let [p] = payloads.as_slice() else { panic!() };
        let PayloadBody::Ke(KeyExchange { group: g, data, .. }) = &p.body else {
            panic!()
        };
        assert_eq!(*g, TransformId(group));
        assert!(
            points.contains(data),
            "KE data is one of the RFC's public values"
        );
        let mut again = Vec::new();
        sixgate_proto::wire::emit_chain(&payloads, &mut again).unwrap();
        assert_eq!(again, bytes);
        checked += 1;
    }
    assert_eq!(checked, 4);
}
