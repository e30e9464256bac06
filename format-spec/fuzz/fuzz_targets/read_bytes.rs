//! libFuzzer target: arbitrary bytes as a recording must never panic the reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sgdwalk_format_fuzz::check(data);
});
