//! The logic of every fuzz target, as plain functions: libFuzzer calls them
//! through the thin wrappers in `fuzz_targets/`, and `cargo test` calls them
//! on stable for a bounded number of iterations (`tests/bounded.rs`).
//! Each function panics exactly when the property it checks is broken.

use arbitrary::Unstructured;
use generator::{build, expected, Config, ImageSpec};
use spec_model::{check_bytes as model_check, Severity, Verdict};

/// Arbitrary bytes into the model: never panics, and the verdict agrees
/// with the findings (bounded allocation is checked by the robustness tests
/// and by libFuzzer's `-rss_limit_mb`).
pub fn check_bytes(data: &[u8]) {
    let r = model_check(data);
    assert_eq!(
        r.verdict,
        Verdict::of(&r.findings),
        "verdict disagrees with findings"
    );
    for f in &r.findings {
        assert!(
            f.rule.severities().contains(&f.severity),
            "{} as {:?}",
            f.rule,
            f.severity
        );
    }
    let bitmap_error = r
        .findings
        .iter()
        .any(|f| f.severity == Severity::Error && f.rule.id().starts_with("bitmaps."));
    for b in &r.bitmaps {
        assert!(
            !(bitmap_error && b.usable),
            "bitmap {:?} usable in an invalid extension",
            b.name
        );
        assert_eq!(
            b.usable,
            b.content_sha256.is_some(),
            "contents only for usable bitmaps"
        );
        assert_eq!(
            b.usable,
            b.set_bits.is_some(),
            "set_bits only for usable bitmaps"
        );
    }
}

/// An arbitrary ImageSpec, built and checked: valid (only notes and limits
/// the spec implies) and with exactly the spec's bitmaps.
pub fn roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(spec) = ImageSpec::arbitrary_with(&mut u, &Config::default()) else {
        return;
    };
    let Ok(built) = build(&spec) else {
        return;
    };
    let r = model_check(&built.bytes);
    let want = expected::for_spec(&spec);
    assert_eq!(r.verdict.as_str(), want.verdict, "{:#?}", r.findings);
    for f in &r.findings {
        assert!(
            matches!(
                f.severity,
                Severity::Note | Severity::Limit | Severity::Unspecified
            ),
            "unexpected finding {f:?}"
        );
    }
    let bitmaps = want.bitmaps.unwrap_or_default();
    assert_eq!(r.bitmaps.len(), bitmaps.len());
    for (got, want) in r.bitmaps.iter().zip(&bitmaps) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.granularity_bits, want.granularity_bits);
        assert_eq!(got.usable, want.usable);
        assert_eq!(got.content_sha256, want.content_sha256);
        assert_eq!(got.set_bits, want.set_bits);
    }
}

/// `dump` of arbitrary bytes never panics and its JSON parses back.
pub fn dump_json(data: &[u8]) {
    let Ok(model) = spec_model::Model::open(std::io::Cursor::new(data)) else {
        return;
    };
    let d = spec_model::dump::dump(model.analysis());
    let text = serde_json::to_string(&d).expect("dump serialises");
    let _: serde_json::Value = serde_json::from_str(&text).expect("dump JSON parses");
    let _ = spec_model::dump::render(&d);
}

/// An arbitrary mutation applied to an arbitrary base spec: the model
/// reports exactly the targeted rule (plus the mutation's documented `also`
/// set) as errors, with the expected verdict and extension state.
pub fn mutant_verdict(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let catalogue = generator::mutate::catalogue();
    let Ok(index) = u.choose_index(catalogue.len()) else {
        return;
    };
    let m = &catalogue[index];
    if m.heavy {
        return;
    }
    let Ok(seed) = u.arbitrary::<u64>() else {
        return;
    };
    let cfg = Config::small();
    let Ok(mt) = generator::mutate::make(m, seed, &cfg) else {
        return;
    };
    let r = model_check(&mt.bytes);
    assert_eq!(
        r.verdict.as_str(),
        mt.expected.verdict,
        "{}: {:#?}",
        m.id,
        r.findings
    );
    let ext = serde_json::to_value(r.bitmaps_extension).unwrap_or_default();
    assert_eq!(ext, mt.expected.bitmaps_extension.as_str(), "{}", m.id);
    if mt.expected.verdict == "invalid" {
        let mut want: Vec<&str> = mt.expected.rules.iter().map(String::as_str).collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(r.rules_with(Severity::Error), want, "{}", m.id);
    } else {
        for rule in &mt.expected.rules {
            assert!(
                r.findings.iter().any(|f| f.rule.id() == rule),
                "{}: {rule} missing",
                m.id
            );
        }
    }
}
