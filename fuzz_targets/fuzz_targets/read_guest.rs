#![cfg_attr(fuzzing, no_main)]
fuzz_targets::fuzz_main!(read_guest);
