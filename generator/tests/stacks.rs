//! `mutate::apply_stack`: one or several catalogue mutations applied to a
//! given base spec. A stack of one breaks its rule as `make` does and comes
//! with the expected verdict by construction; independent mutations each
//! break their own rule; stacks are deterministic in the seed, a mutation's
//! choices do not depend on its companions, and no combination of the
//! catalogue's mutations panics.

use generator::cases::spec_from_seed;
use generator::mutate::{self, apply_stack, apply_stack_by_id, MutateError, Mutation};
use generator::{Config, ImageSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spec_model::{check_bytes, Rule, Severity};
use std::collections::BTreeSet;

fn light() -> Vec<&'static Mutation> {
    mutate::catalogue().iter().filter(|m| !m.heavy).collect()
}

fn env(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Small images with every option the default profile allows.
fn config() -> Config {
    Config {
        max_cluster_bits: 16,
        max_size: 16 << 20,
        max_write_len: 128 << 10,
        ..Config::default()
    }
}

fn errors(bytes: &[u8]) -> BTreeSet<&'static str> {
    check_bytes(bytes)
        .rules_with(Severity::Error)
        .into_iter()
        .collect()
}

#[test]
fn a_stack_of_one_breaks_its_rule_and_knows_its_verdict() {
    let cfg = config();
    let seeds = env("STACK_SEEDS", 12);
    let mut never = Vec::new();
    let mut bad = Vec::new();
    for m in light() {
        let mut applied = 0;
        for seed in 0..seeds {
            let base = spec_from_seed(seed, &cfg);
            let st = match apply_stack(&[m], &base, seed) {
                Ok(st) => st,
                Err(MutateError::NoneApplied(_) | MutateError::Build(_)) => continue,
                Err(e) => panic!("{}: {e}", m.id),
            };
            applied += 1;
            assert_eq!(st.applied, [m.id]);
            assert!(st.skipped.is_empty());
            let want = st.expected.as_ref().expect("a stack of one has a verdict");
            let r = check_bytes(&st.bytes);
            let want_errors: BTreeSet<&str> = if m.severity == Severity::Error {
                m.rules().map(Rule::id).collect()
            } else {
                BTreeSet::new()
            };
            let got = errors(&st.bytes);
            if r.verdict != want.verdict || got != want_errors {
                bad.push(format!(
                    "{} seed {seed}: verdict {} (expected {}), errors {got:?} (expected {want_errors:?})",
                    m.id,
                    r.verdict.as_str(),
                    want.verdict.as_str()
                ));
            }
            if !r.findings.iter().any(|f| f.rule == m.rule) {
                bad.push(format!("{} seed {seed}: {} not reported", m.id, m.rule));
            }
        }
        if applied == 0 {
            never.push(m.id);
        }
    }
    assert!(
        bad.is_empty(),
        "{} failures:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(
        never.is_empty(),
        "never applied in {seeds} seeds: {never:?}"
    );
}

#[test]
fn independent_mutations_each_break_their_rule() {
    let pairs = [
        ("bitmaps.dir.type/zero", "l2.reserved-bits/set"),
        (
            "bitmaps.table.reserved-bits/bits-1-8",
            "snapshot.extra-data/short",
        ),
        ("header.padding/non-zero", "refcount.bounds/unused-entry"),
    ];
    for (a, b) in pairs {
        for seed in 0..4 {
            let base = spec_from_seed(seed, &Config::small());
            let st = apply_stack_by_id(&[a, b], &base, seed).unwrap();
            assert_eq!(st.applied, [a, b], "seed {seed}: {:?}", st.skipped);
            assert!(st.expected.is_none(), "no verdict by construction");
            let got = errors(&st.bytes);
            let rule = |id: &str| id.split_once('/').unwrap().0.to_string();
            let want: BTreeSet<String> = [rule(a), rule(b)].into();
            let got: BTreeSet<String> = got.into_iter().map(String::from).collect();
            assert_eq!(got, want, "{a} + {b}, seed {seed}");
            // Each alone breaks only its own rule.
            for id in [a, b] {
                let one = apply_stack_by_id(&[id], &base, seed).unwrap();
                let got: BTreeSet<String> =
                    errors(&one.bytes).into_iter().map(String::from).collect();
                assert_eq!(got, [rule(id)].into(), "{id}, seed {seed}");
            }
        }
    }
    let base = spec_from_seed(0, &Config::small());
    let three = apply_stack_by_id(
        &[
            "header.padding/non-zero",
            "bitmaps.dir.type/zero",
            "l2.reserved-bits/set",
        ],
        &base,
        9,
    )
    .unwrap();
    assert_eq!(
        errors(&three.bytes),
        ["bitmaps.dir.type", "header.padding", "l2.reserved-bits"].into()
    );
}

/// The bytes where `a` and `b` differ (`b` may be longer: its tail counts).
fn diff(a: &[u8], b: &[u8]) -> BTreeSet<usize> {
    (0..a.len().max(b.len()))
        .filter(|&i| a.get(i) != b.get(i))
        .collect()
}

#[test]
fn stacks_are_deterministic_and_choices_follow_the_mutation() {
    let base = spec_from_seed(3, &Config::small());
    let built = generator::build(&{
        let mut s = base.clone();
        // Both mutations below keep the spec (their `prepare` only asks
        // for version 3, which it already is or becomes).
        s.version = 3;
        s
    });
    let ids = ["header.magic/wrong-byte", "header.crypt-method/unknown"];
    let mut seen = BTreeSet::new();
    for seed in 0..8 {
        let ab = apply_stack_by_id(&ids, &base, seed).unwrap();
        let again = apply_stack_by_id(&ids, &base, seed).unwrap();
        assert_eq!(ab.bytes, again.bytes, "deterministic in the seed");
        seen.insert(ab.bytes.clone());
        // Order does not matter for edits that do not touch each other,
        // and each mutation makes the same choice alone as in the stack.
        let ba = apply_stack_by_id(&[ids[1], ids[0]], &base, seed).unwrap();
        assert_eq!(ab.bytes, ba.bytes);
        let plain = &apply_stack_by_id(&[], &base, seed);
        assert!(matches!(plain, Err(MutateError::NoneApplied(_))));
        let a = apply_stack_by_id(&ids[..1], &base, seed).unwrap();
        let b = apply_stack_by_id(&ids[1..], &base, seed).unwrap();
        if let Ok(built) = &built {
            let mut both = diff(&built.bytes, &a.bytes);
            both.extend(diff(&built.bytes, &b.bytes));
            assert_eq!(diff(&built.bytes, &ab.bytes), both, "seed {seed}");
        }
    }
    assert!(
        seen.len() >= 6,
        "the seed drives the choices: {}",
        seen.len()
    );
}

#[test]
fn a_mutation_that_no_longer_fits_is_skipped() {
    let base = spec_from_seed(1, &Config::small());
    let st = apply_stack_by_id(
        &["header.truncated/inside-header", "header.dirty/set"],
        &base,
        5,
    )
    .unwrap();
    assert_eq!(st.applied, ["header.truncated/inside-header"]);
    assert_eq!(st.skipped.len(), 1);
    assert_eq!(st.skipped[0].0, "header.dirty/set");
    assert!(st.skipped[0].1.contains("truncated"), "{:?}", st.skipped);
    assert_eq!(errors(&st.bytes), ["header.truncated"].into());
    // The other order applies both (the dirty bit is cut off with the
    // rest of the header).
    let st = apply_stack_by_id(
        &["header.dirty/set", "header.truncated/inside-header"],
        &base,
        5,
    )
    .unwrap();
    assert_eq!(st.applied.len(), 2);
    // A spec without bitmaps after every prepare: the bitmap mutation's
    // apply finds nothing and the stack fails as a whole.
    let mut none = ImageSpec::empty(1 << 20);
    none.bitmaps.clear();
    let e = apply_stack_by_id(
        &[
            "bitmaps.dir.type/zero",
            "bitmaps.autoclear-without-extension/bit-0-set",
        ],
        &none,
        0,
    )
    .unwrap();
    assert_eq!(
        e.applied,
        ["bitmaps.autoclear-without-extension/bit-0-set"],
        "the second prepare removed the bitmaps: {:?}",
        e.skipped
    );
    assert!(matches!(
        apply_stack_by_id(&["no.such/rule"], &none, 0),
        Err(MutateError::Unknown(_))
    ));
}

#[test]
fn random_stacks_never_panic() {
    let all = light();
    let cases = env("STACK_CASES", 400);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut applied = [0u32; 4];
    for case in 0..cases {
        let cfg = if case % 2 == 0 {
            Config::small()
        } else {
            config()
        };
        let base = spec_from_seed(rng.gen(), &cfg);
        let n = rng.gen_range(2..=3);
        let ms: Vec<&Mutation> = (0..n).map(|_| all[rng.gen_range(0..all.len())]).collect();
        let ids: Vec<&str> = ms.iter().map(|m| m.id).collect();
        match apply_stack(&ms, &base, case) {
            Ok(st) => {
                applied[st.applied.len()] += 1;
                let mut listed: Vec<&str> = st.applied.clone();
                listed.extend(st.skipped.iter().map(|(id, _)| *id));
                listed.sort_unstable();
                let mut want = ids.clone();
                want.sort_unstable();
                assert_eq!(listed, want, "every mutation applied or skipped");
                let _ = check_bytes(&st.bytes);
            }
            Err(MutateError::NoneApplied(_) | MutateError::Build(_)) => applied[0] += 1,
            Err(e) => panic!("{ids:?}: {e}"),
        }
    }
    eprintln!("stacks by number of mutations applied: {applied:?}");
    assert!(
        u64::from(applied[2] + applied[3]) > cases / 2,
        "most stacks apply several mutations: {applied:?}"
    );
}

#[test]
fn prepare_alone_gives_the_spec_the_stack_starts_from() {
    for seed in 0..6 {
        let mut base = spec_from_seed(seed, &Config::small());
        base.bitmaps.clear();
        // Idempotent preparation (a v3 image with a bitmap): applying to the
        // prepared spec or to the base gives the same image.
        let m = mutate::by_id("bitmaps.dir.type/zero").unwrap();
        let mut prepared = base.clone();
        mutate::prepare(m, &mut prepared, seed).unwrap();
        assert_eq!(prepared.bitmaps.len(), 1);
        assert_eq!(
            apply_stack(&[m], &prepared, seed).unwrap().bytes,
            apply_stack(&[m], &base, seed).unwrap().bytes
        );
        // A mutation that changes no byte: its preparation is the case.
        let m = mutate::by_id("bitmaps.dir.extra-data/compatible").unwrap();
        let mut prepared = base.clone();
        mutate::prepare(m, &mut prepared, seed).unwrap();
        let b = &prepared.bitmaps[0];
        assert!(b.extra_data_compatible && !b.extra_data.is_empty());
        let built = generator::build(&prepared).unwrap();
        let r = check_bytes(&built.bytes);
        assert!(r.findings_of("bitmaps.dir.extra-data").next().is_some());
        assert!(errors(&built.bytes).is_empty());
    }
}
