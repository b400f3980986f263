//! Random ImageSpecs build into images that the model judges valid (only
//! the notes and limits the spec implies), with bitmaps equal to the spec's
//! names, granularities, flags and contents.

use generator::{build, expected, ImageSpec};
use quickcheck::{QuickCheck, TestResult};
use spec_model::{check_bytes, Severity, Verdict};

fn allowed(sev: Severity) -> bool {
    matches!(sev, Severity::Note | Severity::Limit)
}

fn roundtrip(spec: &ImageSpec) -> Result<(), String> {
    let built = build(spec).map_err(|e| format!("build: {e}"))?;
    let r = check_bytes(&built.bytes);
    let bad: Vec<_> = r.findings.iter().filter(|f| !allowed(f.severity)).collect();
    if r.verdict != Verdict::Valid || !bad.is_empty() {
        return Err(format!("verdict {:?}, findings {bad:#?}", r.verdict));
    }
    match expected::for_spec(spec).bitmap_differences(&r).first() {
        Some(d) => Err(format!("{d:#}")),
        None => Ok(()),
    }
}

#[test]
fn random_specs_build_valid_images_with_the_specified_bitmaps() {
    fn prop(spec: ImageSpec) -> TestResult {
        match roundtrip(&spec) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(format!(
                "{e}\nspec: {}",
                serde_json::to_string(&spec).unwrap()
            )),
        }
    }
    let n = generator::spec::quickcheck_tests(300);
    QuickCheck::new()
        .tests(n)
        .quickcheck(prop as fn(ImageSpec) -> TestResult);
}

#[test]
fn hand_written_spec_round_trips() {
    let mut spec = ImageSpec::empty(10 << 20);
    spec.writes.push(generator::GuestWrite::new(4096, 70000, 7));
    spec.bitmaps.push(generator::BitmapSpec::new(
        "b0",
        16,
        generator::contents::Contents::Ranges(vec![(0, 3), (159, 160)]),
    ));
    roundtrip(&spec).unwrap();
    let r = check_bytes(&build(&spec).unwrap().bytes);
    assert_eq!(r.bitmaps[0].contents.set_bits, Some(4));
}

#[test]
fn zero_size_disk_with_a_bitmap_is_unspecified_not_invalid() {
    let mut spec = ImageSpec::empty(0);
    spec.bitmaps.push(generator::BitmapSpec::new(
        "empty",
        16,
        generator::contents::Contents::Empty,
    ));
    let want = expected::for_spec(&spec);
    assert_eq!(want.verdict, Verdict::Unspecified);
    let r = check_bytes(&build(&spec).unwrap().bytes);
    assert_eq!(r.verdict, Verdict::Unspecified, "{:#?}", r.findings);
    assert!(r.findings.iter().all(|f| f.severity != Severity::Error));
    assert_eq!(
        r.rules_with(Severity::Unspecified),
        vec!["bitmaps.dir.table-size"]
    );
    assert_eq!(r.bitmaps[0].contents.set_bits, Some(0));
}

#[test]
fn a_reserved_type_is_expected_invalid_and_judged_so() {
    let mut spec = ImageSpec::empty(1 << 20);
    spec.bitmaps.push(generator::BitmapSpec {
        bitmap_type: 2,
        auto: false,
        ones_entries: true,
        ..generator::BitmapSpec::new("t", 16, generator::contents::Contents::Full)
    });
    let want = expected::for_spec(&spec);
    assert_eq!(
        (want.verdict, want.rules.as_slice()),
        (Verdict::Invalid, &["bitmaps.dir.type".to_string()][..])
    );
    let r = check_bytes(&build(&spec).unwrap().bytes);
    assert_eq!(r.rules_with(Severity::Error), vec!["bitmaps.dir.type"]);
}
