#![cfg_attr(fuzzing, no_main)]
fuzz_targets::fuzz_main!(draft_dump);
