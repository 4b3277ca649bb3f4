//! SK/SKF opening, the decrypted-payload parser and fragment reassembly.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sixgate_proto::fuzzing::open_encrypted(data));
