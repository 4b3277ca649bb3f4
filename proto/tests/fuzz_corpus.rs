//! Runs the fuzz targets over their stored corpora (fuzz/corpus/), so every
//! input a fuzzing run kept is a regression test on the stable toolchain.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
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
            let d = std::fs::read(&p).unwrap();
            (p, d)
        })
        .collect()
}

#[test]
fn message_corpus() {
    for (_, data) in corpus("message") {
        sixgate_proto::fuzzing::parse_message(&data);
    }
}

#[test]
fn encrypted_corpus() {
    for (_, data) in corpus("encrypted") {
        sixgate_proto::fuzzing::open_encrypted(&data);
    }
}
