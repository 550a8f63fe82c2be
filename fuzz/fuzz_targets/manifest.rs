//! Fuzz target: `keyhole_host::fuzzing::manifest` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyhole_host::fuzzing::manifest(data));
