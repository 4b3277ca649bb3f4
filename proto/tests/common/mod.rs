//! Helpers shared by the integration tests: test data files, the example
//! certificates, and a seeded random generator.
#![allow(dead_code)]

pub mod lab;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn certs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../certs-example")
}

/// Reads a known-answer file: `name = value` lines, cases separated by
/// blank lines, `#` comments.
pub fn kat(file: &str) -> Vec<BTreeMap<String, String>> {
    let path = data_dir().join("kat").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut cases = Vec::new();
    let mut case = BTreeMap::new();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !case.is_empty() {
                cases.push(std::mem::take(&mut case));
            }
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        case.insert(k.trim().to_string(), v.trim().to_string());
    }
    assert!(!cases.is_empty(), "{} has no cases", path.display());
    cases
}

pub fn hex(case: &BTreeMap<String, String>, key: &str) -> Vec<u8> {
    hex::decode(
        case.get(key)
            .unwrap_or_else(|| panic!("case lacks {key}: {case:?}")),
    )
    .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// The DER certificates of a PEM file under certs-example/.
pub fn certs(path: &str) -> Vec<Vec<u8>> {
    let pem = std::fs::read(certs_dir().join(path)).expect(path);
    sixgate_proto::cert::certificates_from_pem(&pem).expect(path)
}

pub fn private_key(path: &str) -> sixgate_proto::auth::PrivateKey {
    let pem = std::fs::read(certs_dir().join(path)).expect(path);
    sixgate_proto::auth::PrivateKey::from_pem(&pem).expect(path)
}

pub fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    use rand_core::SeedableRng;
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

/// 2026-06-01T00:00:00Z, a time at which the example certificates are valid.
pub const NOW: i64 = 1_780_272_000;
