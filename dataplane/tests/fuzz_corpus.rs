//! Runs the inbound-ESP fuzz target over its stored corpus
//! (fuzz/corpus/inbound_esp), so every input a fuzzing run kept is a
//! regression test on the stable toolchain.

use std::path::PathBuf;

#[test]
fn inbound_esp_corpus() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (_, data) in sixgate_proto::fuzzing::stored_corpus(&here, "inbound_esp") {
        sixgate_dataplane::fuzzing::inbound_esp(&data);
    }
}
