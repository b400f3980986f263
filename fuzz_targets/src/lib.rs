//! Fuzz target logic (the fuzzing issue fills this in): each target is a
//! plain function here, and `fuzz_targets/*.rs` wrap them for libFuzzer.
