//! Every mutation of the catalogue, over many seeds, breaks exactly the
//! rule it targets (plus its documented `also` set), and the model agrees
//! with the expected verdict, extension state and bitmaps; every rule of
//! the catalogue has a mutation; mutants are deterministic.

use generator::mutate::{self, Mutation};
use generator::Config;
use spec_model::{check_bytes, Rule, Severity};
use std::collections::BTreeSet;

/// Seeds per mutation (heavy ones build multi-MiB images: fewer).
fn seeds(m: &Mutation) -> u64 {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    if m.heavy {
        env("MUTANT_HEAVY_SEEDS").unwrap_or(5)
    } else {
        env("MUTANT_SEEDS").unwrap_or(200)
    }
}

/// Everything the default config allows, at sizes that keep a few thousand
/// images fast; `MUTANT_CONFIG=default|qemu|small` picks a named config.
fn config() -> Config {
    match std::env::var("MUTANT_CONFIG").as_deref() {
        Ok("default") => Config::default(),
        Ok("qemu") => Config::qemu(),
        Ok("small") => Config::small(),
        _ => Config {
            max_cluster_bits: 16,
            max_size: 16 << 20,
            max_write_len: 128 << 10,
            ..Config::default()
        },
    }
}

fn verify(m: &Mutation, seed: u64, cfg: &Config) -> Result<(), String> {
    let mt = mutate::make(m, seed, cfg).map_err(|e| format!("make: {e}"))?;
    let r = check_bytes(&mt.bytes);
    let fail = |what: String| Err(format!("{what}\n{}", r.summary()));

    let errors: BTreeSet<&str> = r.rules_with(Severity::Error).into_iter().collect();
    let want: BTreeSet<&str> = if m.severity == Severity::Error {
        m.rules().map(Rule::id).collect()
    } else {
        BTreeSet::new()
    };
    if errors != want {
        return fail(format!("errors {errors:?}, expected {want:?}"));
    }
    if !r
        .findings
        .iter()
        .any(|f| f.rule == m.rule && f.severity == m.severity)
    {
        return fail(format!("no {} finding as {:?}", m.rule, m.severity));
    }
    if (m.severity == Severity::Error) != mt.expected.bitmaps.is_none() {
        return fail("expected.bitmaps must be given exactly for non-error cases".into());
    }
    // Every expected rule reported, the verdict, the extension state, and
    // the bitmaps of a non-error case.
    if let Some(d) = mt.expected.differences(&r).first() {
        return fail(format!("{d:#}"));
    }
    Ok(())
}

#[test]
fn every_mutation_breaks_exactly_its_rule() {
    let cfg = config();
    let all = mutate::catalogue();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(m) = all.get(i) else { break };
                let mut bad = Vec::new();
                for seed in 0..seeds(m) {
                    if let Err(e) = verify(m, seed, &cfg) {
                        bad.push((seed, e));
                    }
                }
                if let Some((seed, e)) = bad.first() {
                    failures.lock().unwrap().push(format!(
                        "{} ({} of {} seeds fail), first at seed {seed}: {e}",
                        m.id,
                        bad.len(),
                        seeds(m)
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} mutations fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_rule_has_a_mutation() {
    let missing: Vec<&str> = Rule::ALL
        .iter()
        .filter(|r| mutate::by_rule(r.id()).is_empty())
        .map(|r| r.id())
        .collect();
    assert!(missing.is_empty(), "rules without a mutation: {missing:?}");
}

#[test]
fn every_severity_of_a_rule_has_a_mutation() {
    let mut missing = Vec::new();
    for r in Rule::ALL {
        for s in r.severities() {
            if !mutate::by_rule(r.id()).iter().any(|m| m.severity == *s) {
                missing.push(format!("{} as {}", r.id(), s.as_str()));
            }
        }
    }
    assert!(missing.is_empty(), "no mutation for: {missing:?}");
}

#[test]
fn mutation_ids_are_unique_and_name_their_rule() {
    let mut seen = BTreeSet::new();
    for m in mutate::catalogue() {
        assert!(seen.insert(m.id), "duplicate id {}", m.id);
        let (rule, variant) = m.id.split_once('/').expect("id is rule/variant");
        assert_eq!(rule, m.rule.id(), "{}", m.id);
        assert!(!variant.is_empty(), "{}", m.id);
        assert!(m.rule.severities().contains(&m.severity), "{}", m.id);
        for a in m.also {
            assert!(a.severities().contains(&Severity::Error), "{}", m.id);
        }
        assert_eq!(mutate::by_id(m.id).map(|x| x.id), Some(m.id));
    }
    assert!(mutate::make_by_id("no.such/rule", 0, &Config::default()).is_err());
}

#[test]
fn mutants_are_deterministic() {
    let cfg = config();
    for m in mutate::catalogue().iter().filter(|m| !m.heavy) {
        for seed in [0, 7, 1 << 40] {
            let a = mutate::make(m, seed, &cfg).unwrap();
            let b = mutate::make(m, seed, &cfg).unwrap();
            assert!(a.bytes == b.bytes, "{} seed {seed}: bytes differ", m.id);
            assert_eq!(a.expected, b.expected, "{} seed {seed}", m.id);
            assert_eq!(a.spec, b.spec, "{} seed {seed}", m.id);
        }
    }
}
