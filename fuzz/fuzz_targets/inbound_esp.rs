//! Datagrams, and inner packets sealed with the SA's keys, through the
//! userspace data plane's receive step: no panic, no forgery or replay
//! opens, and only what the selectors allow comes out.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sixgate_dataplane::fuzzing::inbound_esp(data));
