//! The bodies of the fuzz targets in `fuzz/`, kept here so the stored
//! corpora also run as ordinary tests on the stable toolchain
//! (`tests/fuzz_corpus.rs`). Each function panics only if it finds a bug.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};

use crate::endpoint::{Config, Endpoint};

use crate::crypto::sk::{Reassembly, SkCipher};
use crate::crypto::{Encryption, Integrity};
use crate::wire::{
    classify_udp4500, parse_chain, EspTrailer, ExchangeType, Flags, Header, Message, Payload,
    PayloadBody, Udp4500,
};

/// The inputs a fuzzing run kept for `target` (`fuzz/corpus/TARGET` of
/// the workspace whose member `crate_dir` is), sorted; panics when there
/// are fewer than ten, as a replay of nothing would prove nothing.
pub fn stored_corpus(
    crate_dir: &std::path::Path,
    target: &str,
) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = crate_dir.join("../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} holds only {} inputs",
        dir.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|p| {
            let d = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, d)
        })
        .collect()
}

/// Parses `data` as an IKE message (and as a port-4500 datagram); whatever
/// parses must emit to bytes that parse to the same message.
pub fn parse_message(data: &[u8]) {
    let ike = match classify_udp4500(data) {
        Ok(Udp4500::Ike(ike)) => ike,
        Ok(Udp4500::Esp(esp)) => {
            let _ = EspTrailer::split(esp);
            data
        }
        _ => data,
    };
    for candidate in [data, ike] {
        if let Ok(msg) = Message::parse(candidate) {
            let bytes = msg.emit().expect("a parsed message emits");
            assert_eq!(
                Message::parse(&bytes).as_ref(),
                Ok(&msg),
                "emit/parse is not a fixed point"
            );
        }
    }
}

/// A deterministic stand-in for randomness: the targets must be repeatable.
struct CounterRng(u64);

impl RngCore for CounterRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next_u64() as u8;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for CounterRng {}

const SUITES: [(Encryption, Option<Integrity>); 3] = [
    (Encryption::AesGcm16 { key_bits: 128 }, None),
    (Encryption::ChaCha20Poly1305, None),
    (
        Encryption::AesCbc { key_bits: 256 },
        Some(Integrity::HmacSha256_128),
    ),
];

/// Opens `data` as an SK/SKF message under fixed keys, and seals the rest of
/// it as an SK payload's content (and as fragments) and opens that again,
/// so the decrypted-payload parser and the reassembly see fuzzed input.
pub fn open_encrypted(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (encr, integ) = SUITES[usize::from(selector) % SUITES.len()];
    let sk_e: Vec<u8> = (0..encr.keymat_len() as u8).collect();
    let sk_a: Vec<u8> = (0..integ.map_or(0, |i| i.key_len()) as u8).collect();
    let cipher = SkCipher::new(encr, integ, &sk_e, &sk_a).expect("valid test keys");

    let mut reassembly = Reassembly::default();
    if let Ok(opened) = cipher.open(rest) {
        if opened.fragment.is_some() {
            let _ = reassembly.add(opened.header.message_id, opened);
        } else {
            let _ = parse_chain(opened.first_payload, &opened.plaintext);
        }
    }

    let header = Header {
        spi_i: 1,
        spi_r: 2,
        minor_version: 0,
        exchange: ExchangeType::IKE_AUTH,
        flags: Flags::new(true, false),
        message_id: 1,
    };
    let mut rng = CounterRng(u64::from(selector));
    let inner: Vec<Payload> = vec![PayloadBody::VendorId(rest.to_vec()).into()];
    let sealed = cipher.seal(&header, &[], &inner, &mut rng).expect("seal");
    let opened = cipher.open(&sealed).expect("open what was sealed");
    assert_eq!(
        parse_chain(opened.first_payload, &opened.plaintext).as_deref(),
        Ok(&inner[..])
    );
    let max_len = 100 + usize::from(selector) * 4;
    if let Ok(fragments) = cipher.seal_fragments(&header, &inner, max_len, &mut rng) {
        let mut done = None;
        for f in fragments.iter().rev() {
            done = reassembly
                .add(header.message_id, cipher.open(f).expect("open fragment"))
                .ok()
                .flatten();
        }
        if fragments.len() <= usize::from(crate::crypto::sk::MAX_FRAGMENTS) && rest.len() < 60_000 {
            let (first, plain) = done.expect("all fragments given");
            assert_eq!(parse_chain(first, &plain).as_deref(), Ok(&inner[..]));
        }
    }
}

/// Feeds a responder endpoint a sequence of datagrams, each framed as a
/// big-endian u16 length and the bytes, from two source addresses, with
/// time passing between them. Nothing may panic, and the half-open SAs
/// stay within the configured bound.
pub fn responder(config: Arc<Config>, data: &[u8]) {
    let max = config.max_half_open;
    let start = Instant::now();
    let mut ep = Endpoint::new(config, Box::new(CounterRng(1)), start, 1_780_272_000);
    let local = "192.0.2.1:500".parse().expect("literal");
    let mut rest = data;
    let mut i = 0u64;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        i += 1;
        let now = start + Duration::from_millis(i * 700);
        let remote = if i.is_multiple_of(2) {
            "192.0.2.2:500"
        } else {
            "192.0.2.3:4500"
        };
        ep.handle(now, remote.parse().expect("literal"), local, datagram);
        ep.handle_timeout(now);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
        assert!(ep.ike_sa_count() <= max, "half-open SAs exceed their bound");
    }
}

/// A CRL file as an operator might drop into `[ike] crl` (PEM or DER),
/// checked against `anchors` at `now` and, when it is accepted, used to
/// check an identity: no panic, and a CRL revokes something only when it
/// was accepted and lists something, never an identity.
pub fn crl(anchors: &crate::cert::TrustAnchors, now: i64, data: &[u8]) {
    use crate::cert::Revocations;
    use crate::identity::CanonicalIdentity;
    let Ok(der) = crate::cert::crl_from_file(data) else {
        return;
    };
    let mut revocations = Revocations::new();
    let Ok(summary) = revocations.add_crl(anchors, &der, now) else {
        assert!(revocations.is_empty(), "a refused CRL revoked something");
        return;
    };
    assert_eq!(revocations.is_empty(), summary.revoked == 0);
    let nobody = CanonicalIdentity::parse("nobody@example.net").expect("an identity");
    assert!(revocations.check(&[], &nobody).is_ok());
}
