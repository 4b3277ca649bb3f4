//! Key exchange, SK payload protection, fragmentation, key derivation and
//! AUTH signatures, each against its own inverse and against tampering.

mod common;

use sixgate_proto::auth::{self, signed_octets, SignMode};
use sixgate_proto::crypto::sk::{Reassembly, SkCipher};
use sixgate_proto::crypto::{
    ChildSaKeys, Encryption, EspKeys, IkeSaKeys, Integrity, KeGroup, KeyExchangeSecret, Legacy,
    Prf, Suite,
};
use sixgate_proto::error::{Error, PeerMisbehaved};
use sixgate_proto::wire::*;

const ALL_GROUPS: [KeGroup; 6] = [
    KeGroup::Curve25519,
    KeGroup::Ecp256,
    KeGroup::Ecp384,
    KeGroup::Modp2048,
    KeGroup::Modp3072,
    KeGroup::Modp1024,
];

#[test]
fn every_group_agrees_on_a_shared_secret() {
    let mut rng = common::rng(1);
    for group in ALL_GROUPS {
        let a = KeyExchangeSecret::generate(group, &mut rng);
        let b = KeyExchangeSecret::generate(group, &mut rng);
        let (pa, pb) = (a.public_value(), b.public_value());
        assert_eq!(pa.len(), group.public_len(), "{group:?}");
        let s1 = a.agree(&pb).unwrap();
        let s2 = b.agree(&pa).unwrap();
        assert_eq!(*s1, *s2, "{group:?}");
        assert_ne!(pa, pb);
    }
}

#[test]
fn seeded_generation_is_reproducible() {
    for group in ALL_GROUPS {
        let a = KeyExchangeSecret::generate(group, &mut common::rng(7));
        let b = KeyExchangeSecret::generate(group, &mut common::rng(7));
        assert_eq!(a.public_value(), b.public_value(), "{group:?}");
    }
}

#[test]
fn invalid_public_values_are_refused() {
    let mut rng = common::rng(2);
    for group in ALL_GROUPS {
        let me = KeyExchangeSecret::generate(group, &mut rng);
        let invalid = Err(PeerMisbehaved::InvalidPublicValue(group.id()));
        let len = group.public_len();
        assert_eq!(me.agree(&vec![1; len - 1]), invalid, "{group:?} short");
        assert_eq!(me.agree(&vec![1; len + 1]), invalid, "{group:?} long");
        match group {
            KeGroup::Curve25519 => {
                // The identity and a point of order 8 give an all-zero result.
                assert_eq!(me.agree(&[0; 32]), invalid);
                assert_eq!(
                    me.agree(&[1; 1].iter().chain(&[0; 31]).copied().collect::<Vec<_>>()),
                    invalid
                );
            }
            KeGroup::Ecp256 | KeGroup::Ecp384 => {
                let mut off_curve = KeyExchangeSecret::generate(group, &mut rng).public_value();
                off_curve[len - 1] ^= 1;
                assert_eq!(me.agree(&off_curve), invalid, "{group:?} off curve");
                assert_eq!(me.agree(&vec![0; len]), invalid, "{group:?} zero");
            }
            _ => {
                let p = group.modp_prime().unwrap();
                let int = |v: u8| {
                    let mut x = vec![0; len];
                    x[len - 1] = v;
                    x
                };
                let mut p_minus_1 = p.clone();
                p_minus_1[len - 1] -= 1;
                for bad in [int(0), int(1), p_minus_1, p.clone(), vec![0xff; len]] {
                    assert_eq!(me.agree(&bad), invalid, "{group:?}");
                }
                assert!(me.agree(&int(2)).is_ok(), "{group:?} g itself is fine");
            }
        }
    }
}

fn suites() -> Vec<(Encryption, Option<Integrity>)> {
    let mut out = vec![
        (Encryption::AesGcm16 { key_bits: 128 }, None),
        (Encryption::AesGcm16 { key_bits: 256 }, None),
        (Encryption::ChaCha20Poly1305, None),
    ];
    for bits in [128, 256] {
        for integ in [
            Integrity::HmacSha256_128,
            Integrity::HmacSha384_192,
            Integrity::HmacSha512_256,
            Integrity::HmacSha1_96,
        ] {
            out.push((Encryption::AesCbc { key_bits: bits }, Some(integ)));
        }
    }
    out
}

fn cipher(encr: Encryption, integ: Option<Integrity>, seed: u8) -> SkCipher {
    let ke: Vec<u8> = (0..encr.keymat_len()).map(|i| i as u8 ^ seed).collect();
    let ka: Vec<u8> = (0..integ.map_or(0, |i| i.key_len()))
        .map(|i| i as u8 ^ seed ^ 0x55)
        .collect();
    SkCipher::new(encr, integ, &ke, &ka).unwrap()
}

fn header() -> Header {
    Header {
        spi_i: 0x1122334455667788,
        spi_r: 0x99aabbccddeeff00,
        minor_version: 0,
        exchange: ExchangeType::IKE_AUTH,
        flags: Flags::new(true, false),
        message_id: 1,
    }
}

fn inner_payloads(size: usize) -> Vec<Payload> {
    vec![
        PayloadBody::IdI(Identification::rfc822("client@example.net")).into(),
        PayloadBody::Cert(Certificate::x509((0..size).map(|i| i as u8).collect())).into(),
        PayloadBody::Notify(Notify::new(NotifyType::INITIAL_CONTACT, vec![])).into(),
    ]
}

#[test]
fn sk_payload_seals_and_opens_for_every_suite() {
    let mut rng = common::rng(3);
    for (encr, integ) in suites() {
        for size in [0, 1, 15, 16, 17, 2000] {
            let inner = inner_payloads(size);
            let sealed = cipher(encr, integ, 1)
                .seal(&header(), &[], &inner, &mut rng)
                .unwrap();
            let opened = cipher(encr, integ, 1).open(&sealed).unwrap();
            assert_eq!(opened.header, header());
            let parsed = parse_chain(opened.first_payload, &opened.plaintext).unwrap();
            assert_eq!(parsed, inner, "{encr:?} {integ:?} {size}");
            // The sealed message is itself a well-formed message.
            assert_eq!(Message::parse(&sealed).unwrap().emit().unwrap(), sealed);
        }
    }
}

#[test]
fn sk_payload_refuses_tampering_and_wrong_keys() {
    let mut rng = common::rng(4);
    for (encr, integ) in suites() {
        let sealed = cipher(encr, integ, 1)
            .seal(&header(), &[], &inner_payloads(100), &mut rng)
            .unwrap();
        assert_eq!(
            cipher(encr, integ, 2).open(&sealed).unwrap_err(),
            Error::PeerMisbehaved(PeerMisbehaved::IntegrityCheckFailed),
            "{encr:?} wrong key"
        );
        // Every byte is covered: header (as AAD or under the ICV), IV,
        // ciphertext and ICV alike.
        for at in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[at] ^= 0x80;
            assert!(
                cipher(encr, integ, 1).open(&bad).is_err(),
                "{encr:?} byte {at}"
            );
        }
    }
}

#[test]
fn fragments_reassemble_in_any_order() {
    let mut rng = common::rng(5);
    for (encr, integ) in suites() {
        let inner = inner_payloads(3000);
        let c = cipher(encr, integ, 9);
        let fragments = c.seal_fragments(&header(), &inner, 576, &mut rng).unwrap();
        assert!(fragments.len() >= 6, "{}", fragments.len());
        for f in &fragments {
            assert!(f.len() <= 576, "{encr:?} fragment of {} octets", f.len());
        }
        let mut r = Reassembly::default();
        let mut order: Vec<usize> = (0..fragments.len()).rev().collect();
        order.insert(1, order[0]); // a duplicate
        let mut done = None;
        for i in order {
            let opened = c.open(&fragments[i]).unwrap();
            assert!(done.is_none(), "completed early");
            done = r.add(1, opened).unwrap();
        }
        let (first, plaintext) = done.expect("all fragments given");
        assert_eq!(parse_chain(first, &plaintext).unwrap(), inner);
    }
}

#[test]
fn refragmenting_with_more_fragments_starts_over() {
    let mut rng = common::rng(6);
    let (encr, integ) = (Encryption::AesGcm16 { key_bits: 128 }, None);
    let c = cipher(encr, integ, 3);
    let inner = inner_payloads(2000);
    let coarse = c.seal_fragments(&header(), &inner, 1280, &mut rng).unwrap();
    let fine = c.seal_fragments(&header(), &inner, 576, &mut rng).unwrap();
    assert!(fine.len() > coarse.len());
    let mut r = Reassembly::default();
    assert!(r.add(1, c.open(&coarse[0]).unwrap()).unwrap().is_none());
    let mut done = None;
    for f in &fine {
        done = r.add(1, c.open(f).unwrap()).unwrap();
        // A late fragment of the coarser series is ignored.
        assert!(r.add(1, c.open(&coarse[1]).unwrap()).unwrap().is_none() || done.is_some());
    }
    let (first, plaintext) = done.unwrap();
    assert_eq!(parse_chain(first, &plaintext).unwrap(), inner);
}

#[test]
fn ike_sa_keys_have_the_negotiated_lengths() {
    let suite = Suite {
        encr: Encryption::AesCbc { key_bits: 256 },
        integ: Some(Integrity::HmacSha384_192),
        prf: Prf::HmacSha512,
        ke: KeGroup::Modp2048,
    };
    let keys = IkeSaKeys::derive(&suite, &[7; 64], &[1; 32], &[2; 32], 1, 2);
    assert_eq!(keys.sk_d.len(), 64);
    assert_eq!(keys.sk_ai.len(), 48);
    assert_eq!(keys.sk_ei.len(), 32);
    assert_eq!(keys.sk_pr.len(), 64);
    assert_ne!(keys.sk_ai, keys.sk_ar);
    let stream = Prf::HmacSha512.plus(
        &[7; 64],
        &[&[1; 32], &[2; 32], &1u64.to_be_bytes(), &2u64.to_be_bytes()],
        64 * 3 + 48 * 2 + 32 * 2,
    );
    assert_eq!(keys.sk_d, stream[..64]);
    assert_eq!(keys.sk_pr, stream[stream.len() - 64..]);

    let gcm = Suite {
        encr: Encryption::AesGcm16 { key_bits: 128 },
        integ: None,
        ..suite
    };
    let keys = IkeSaKeys::derive(&gcm, &[7; 64], &[1; 32], &[2; 32], 1, 2);
    assert!(keys.sk_ai.is_empty());
    assert_eq!(keys.sk_ei.len(), 20, "key and salt");
}

#[test]
fn child_keymat_splits_initiator_direction_first() {
    let keymat: Vec<u8> = (0..=255).cycle().take(2 * (32 + 48)).collect();
    let keys = ChildSaKeys::from_keymat(
        Encryption::AesCbc { key_bits: 256 },
        Some(Integrity::HmacSha384_192),
        &keymat,
    )
    .unwrap();
    let EspKeys::AesCbcHmac {
        enc_key, auth_key, ..
    } = &keys.initiator_to_responder
    else {
        panic!()
    };
    assert_eq!(enc_key[..], keymat[..32]);
    assert_eq!(auth_key[..], keymat[32..80]);
    let EspKeys::AesCbcHmac { enc_key, .. } = &keys.responder_to_initiator else {
        panic!()
    };
    assert_eq!(enc_key[..], keymat[80..112]);

    let gcm = ChildSaKeys::from_keymat(Encryption::AesGcm16 { key_bits: 128 }, None, &keymat[..40])
        .unwrap();
    assert_eq!(
        gcm.responder_to_initiator,
        EspKeys::AesGcm16 {
            key: keymat[20..36].to_vec(),
            salt: keymat[36..40].try_into().unwrap()
        }
    );
    assert!(
        ChildSaKeys::from_keymat(Encryption::AesGcm16 { key_bits: 128 }, None, &keymat[..39])
            .is_none()
    );
    assert!(
        ChildSaKeys::from_keymat(Encryption::AesCbc { key_bits: 128 }, None, &keymat[..32])
            .is_none()
    );
}

#[test]
fn auth_signatures_verify_only_with_the_right_key_and_octets() {
    let octets = signed_octets(
        b"IKE_SA_INIT message",
        &[9; 32],
        Prf::HmacSha256,
        &[3; 32],
        &Identification::fqdn("broker.example.net").body(),
    );
    for kind in ["ecdsa", "rsa"] {
        let key = common::private_key(&format!("{kind}/broker.key"));
        let cert = &common::certs(&format!("{kind}/broker.pem"))[0];
        let other = &common::certs(&format!("{kind}/client.pem"))[0];
        let all = auth::VERIFIED_HASHES;
        let modes = [
            (SignMode::DigitalSignature(&all[..1]), "sha256"),
            (SignMode::DigitalSignature(&all[1..2]), "sha384"),
            (SignMode::DigitalSignature(&all[2..]), "sha512"),
            (SignMode::DigitalSignature(&all), "any"),
            (SignMode::Classic(Legacy::Refuse), "classic"),
            (SignMode::Classic(Legacy::Allow), "classic, legacy"),
        ];
        for (mode, what) in modes {
            let auth = match key.sign(&octets, mode) {
                Ok(a) => a,
                Err(_) => {
                    assert!(
                        kind == "rsa" && what == "classic",
                        "only RSA method 1 (SHA-1) without legacy is refused"
                    );
                    continue;
                }
            };
            // RSA PKCS#1 v1.5 and the portable ECDSA (RFC 6979) are
            // deterministic: the same octets, the same signature. ring's
            // ECDSA, used for P-256 with SHA-256, mixes fresh randomness
            // into the nonce (with the key and the message, so a weak
            // generator alone does not give the key away).
            let by_ring =
                kind == "ecdsa" && matches!(what, "sha256" | "any" | "classic" | "classic, legacy");
            let again = key.sign(&octets, mode).unwrap();
            assert_eq!(again == auth, !by_ring, "{kind} {what}");
            let expected = match (kind, what) {
                (_, w) if !w.starts_with("classic") => AuthMethod::DIGITAL_SIGNATURE,
                ("rsa", _) => AuthMethod::RSA_SIG,
                _ => AuthMethod::ECDSA_SHA256_P256,
            };
            assert_eq!(auth.method, expected, "{kind} {what}");
            if auth.method == AuthMethod::RSA_SIG {
                // Method 1 needs SHA-1, which only `legacy` accepts.
                assert!(auth::verify(&auth, &octets, cert, Legacy::Refuse).is_err());
                auth::verify(&auth, &octets, cert, Legacy::Allow).unwrap();
                continue;
            }
            auth::verify(&auth, &octets, cert, Legacy::Refuse).unwrap();
            assert!(
                auth::verify(&auth, &octets, other, Legacy::Refuse).is_err(),
                "{kind} other key"
            );
            let mut changed = octets.clone();
            changed[0] ^= 1;
            assert!(
                auth::verify(&auth, &changed, cert, Legacy::Refuse).is_err(),
                "{kind} other octets"
            );
            let mut forged = auth.clone();
            let last = forged.data.len() - 1;
            forged.data[last] ^= 1;
            assert!(
                auth::verify(&forged, &octets, cert, Legacy::Refuse).is_err(),
                "{kind} forged"
            );
        }
    }
}
