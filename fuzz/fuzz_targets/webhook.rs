//! Webhook bodies (several per input, split at NUL) through verification,
//! parsing and the room state machine; see roomd's src/harness.rs for what
//! is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    roomd::harness::Harness::run(data);
});
