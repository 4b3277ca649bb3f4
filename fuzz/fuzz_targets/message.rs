//! IKE message and port-4500 parsing: no panic, emit/parse a fixed point.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sixgate_proto::fuzzing::parse_message(data));
