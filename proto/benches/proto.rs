//! Speed of the per-message work of an IKE endpoint: parsing and emitting a
//! 2 kB IKE_AUTH message, sealing and opening its SK payload, and one key
//! exchange (both halves) in X25519 and MODP-2048.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand_core::SeedableRng;
use sixgate_proto::crypto::sk::SkCipher;
use sixgate_proto::crypto::{Encryption, Integrity, KeGroup, KeyExchangeSecret};
use sixgate_proto::wire::*;

fn header() -> Header {
    Header {
        spi_i: 0x0102030405060708,
        spi_r: 0x1112131415161718,
        minor_version: 0,
        exchange: ExchangeType::IKE_AUTH,
        flags: Flags::new(true, false),
        message_id: 1,
    }
}

/// The inner payloads of a typical IKE_AUTH request, about 2 kB.
fn ike_auth_payloads() -> Vec<Payload> {
    let v6 = |s: &str| s.parse().unwrap();
    vec![
        PayloadBody::IdI(Identification::rfc822("client@example.net")).into(),
        PayloadBody::Cert(Certificate::x509(vec![0x30; 1360])).into(),
        PayloadBody::CertReq(Certificate {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![7; 40],
        })
        .into(),
        PayloadBody::Notify(Notify::new(NotifyType::INITIAL_CONTACT, vec![])).into(),
        PayloadBody::IdR(Identification::fqdn("broker.example.net")).into(),
        PayloadBody::Auth(Authentication::new(
            AuthMethod::DIGITAL_SIGNATURE,
            vec![5; 280],
        ))
        .into(),
        PayloadBody::Cp(Configuration::address_request()).into(),
        PayloadBody::Sa(SecurityAssociation {
            proposals: sixgate_proto::proposal::EspPolicy::default().proposals([1, 2, 3, 4], false),
        })
        .into(),
        PayloadBody::TsI(TrafficSelectors::new(vec![TrafficSelector::ipv6(
            v6("::"),
            v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        )]))
        .into(),
        PayloadBody::TsR(TrafficSelectors::new(vec![TrafficSelector::ipv6(
            v6("::"),
            v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        )]))
        .into(),
        PayloadBody::Notify(Notify::new(NotifyType::MOBIKE_SUPPORTED, vec![])).into(),
    ]
}

fn wire(c: &mut Criterion) {
    let msg = Message {
        header: header(),
        payloads: ike_auth_payloads(),
    };
    let bytes = msg.emit().unwrap();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function(format!("parse+emit IKE_AUTH ({} B)", bytes.len()), |b| {
        b.iter(|| {
            Message::parse(std::hint::black_box(&bytes))
                .unwrap()
                .emit()
                .unwrap()
        })
    });
    g.finish();
}

fn sk(c: &mut Criterion) {
    let inner = ike_auth_payloads();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("sk");
    for (name, encr, integ) in [
        ("aes128gcm16", Encryption::AesGcm16 { key_bits: 128 }, None),
        ("chacha20poly1305", Encryption::ChaCha20Poly1305, None),
        (
            "aes256-sha256",
            Encryption::AesCbc { key_bits: 256 },
            Some(Integrity::HmacSha256_128),
        ),
    ] {
        let cipher = SkCipher::new(
            encr,
            integ,
            &vec![1; encr.keymat_len()],
            &vec![2; integ.map_or(0, |i| i.key_len())],
        )
        .unwrap();
        let len = cipher.seal(&header(), &[], &inner, &mut rng).unwrap().len();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("seal+open {name} ({len} B)"), |b| {
            b.iter(|| {
                let sealed = cipher.seal(&header(), &[], &inner, &mut rng).unwrap();
                cipher.open(&sealed).unwrap()
            })
        });
    }
    g.finish();
}

fn key_exchange(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let mut g = c.benchmark_group("key exchange");
    g.sample_size(20);
    for group in [
        KeGroup::Curve25519,
        KeGroup::Ecp256,
        KeGroup::Ecp384,
        KeGroup::Modp2048,
        KeGroup::Modp3072,
    ] {
        let peer = KeyExchangeSecret::generate(group, &mut rng).public_value();
        g.bench_function(format!("{group:?} generate+public+agree"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    let me = KeyExchangeSecret::generate(group, &mut rng);
                    let _ = me.public_value();
                    me.agree(&peer).unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, wire, sk, key_exchange);
criterion_main!(benches);
