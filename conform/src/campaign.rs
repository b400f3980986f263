//! The differential campaign: structured random images (valid specs, one-rule
//! mutants, and mutants with further random byte edits) run through an
//! implementation's adapter and judged against the reference model. Every
//! disagreement is minimised (spec shrinking, then byte-level reduction) to
//! the smallest image that still disagrees the same way, deduplicated by
//! outcome and rule set, and saved with both verdicts and a reproducer.

use crate::runner::{self, adapters::Adapter, judge::OutcomeKind, CaseResult, RunOptions};
use anyhow::{Context, Result};
use generator::cases::{case_seed, spec_from_seed};
use generator::expected::{Expected, ExpectedBitmap, ExpectedFlags};
use generator::{build, mutate, Config, ImageSpec, ManifestCase};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which slice of the case sequence this process runs (1-based `index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 2/4")?;
        let (index, count): (u64, u64) = (
            k.parse().map_err(|_| format!("bad shard index {k:?}"))?,
            n.parse().map_err(|_| format!("bad shard count {n:?}"))?,
        );
        if count == 0 || index == 0 || index > count {
            return Err(format!("shard {s} must satisfy 1 <= K <= N"));
        }
        Ok(Shard { index, count })
    }
}

/// Parses `90`, `90s`, `10m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// What the campaign remembers between runs (`OUT/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub implementation: String,
    pub seed: u64,
    pub shard: Option<Shard>,
    /// The next case index to run.
    pub next_index: u64,
    pub cases_run: u64,
    /// Outcomes per kind over all cases run.
    pub outcomes: BTreeMap<String, u64>,
    /// Disagreements per deduplication key (the first one of each is saved).
    pub disagreements: BTreeMap<String, u64>,
}

/// A saved, minimised disagreement (`OUT/findings/KEY/finding.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub key: String,
    pub implementation: String,
    pub case_index: u64,
    pub origin: String,
    pub outcome: String,
    pub detail: Vec<String>,
    /// What the reference model says of the minimised image.
    pub expected: Expected,
    /// File length and non-zero bytes before and after minimising.
    pub original_bytes: u64,
    pub original_nonzero_bytes: u64,
    pub minimised_bytes: u64,
    pub minimised_nonzero_bytes: u64,
    pub reproduce: Vec<String>,
}

/// A generated case before judging.
struct Candidate {
    origin: String,
    bytes: Vec<u8>,
    /// The spec, when the image is a spec built unchanged (shrinkable).
    spec: Option<ImageSpec>,
    expected: Expected,
}

/// The expected verdict the reference model gives `bytes` (the campaign's
/// oracle for images whose expectation is not known by construction).
pub fn expected_from_model(bytes: &[u8]) -> Expected {
    let r = spec_model::check_bytes(bytes);
    let mut rules: Vec<String> = r
        .findings
        .iter()
        .filter(|f| !matches!(f.severity, spec_model::Severity::Leak))
        .map(|f| f.rule.id().to_string())
        .collect();
    rules.sort();
    rules.dedup();
    let bitmaps = (r.verdict != spec_model::Verdict::Invalid).then(|| {
        r.bitmaps
            .iter()
            .map(|b| ExpectedBitmap {
                name: b.name.clone(),
                granularity_bits: b.granularity_bits,
                usable: b.usable,
                flags: ExpectedFlags {
                    in_use: b.flags.in_use,
                    auto: b.flags.auto,
                },
                content_sha256: b.content_sha256.clone(),
                set_bits: b.set_bits,
            })
            .collect()
    });
    Expected {
        verdict: r.verdict.as_str().to_string(),
        rules,
        bitmaps_extension: serde_json::to_value(r.bitmaps_extension)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        bitmaps,
    }
}

/// Case `index`: a valid spec, a one-rule mutant, or a mutant with up to
/// four further byte edits in its metadata clusters (stacked).
fn candidate(seed: u64, index: u64) -> Option<Candidate> {
    let s = case_seed(seed, index);
    let cfg = Config::default();
    match index % 3 {
        0 => {
            let spec = spec_from_seed(s, &cfg);
            let bytes = build(&spec).ok()?.bytes;
            let expected = generator::expected::for_spec(&spec);
            Some(Candidate {
                origin: "valid spec".into(),
                bytes,
                spec: Some(spec),
                expected,
            })
        }
        kind => {
            let cat: Vec<_> = mutate::catalogue().iter().filter(|m| !m.heavy).collect();
            let m = cat[(s % cat.len() as u64) as usize];
            let mt = mutate::make(m, s, &Config::small()).ok()?;
            if kind == 1 {
                return Some(Candidate {
                    origin: format!("mutation {}", m.id),
                    bytes: mt.bytes,
                    spec: None,
                    expected: mt.expected,
                });
            }
            let mut bytes = mt.bytes;
            let mut rng = ChaCha8Rng::seed_from_u64(s ^ 0x5eed);
            let edits = rng.gen_range(1..=4);
            let span = bytes.len().min(1 << 18);
            for _ in 0..edits {
                let at = rng.gen_range(0..span);
                bytes[at] ^= rng.gen::<u8>() | 1;
            }
            let expected = expected_from_model(&bytes);
            Some(Candidate {
                origin: format!("mutation {} + {edits} random byte edits", m.id),
                bytes,
                spec: None,
                expected,
            })
        }
    }
}

/// Deduplication key: outcome and the model's error rules (or verdict).
fn key(kind: OutcomeKind, expected: &Expected) -> String {
    let rules: Vec<&str> = expected
        .rules
        .iter()
        .filter(|r| {
            spec_model::Rule::from_id(r)
                .is_some_and(|x| x.severities().contains(&spec_model::Severity::Error))
        })
        .map(String::as_str)
        .collect();
    let what = if expected.verdict == "invalid" && !rules.is_empty() {
        rules.join("+")
    } else {
        expected.verdict.clone()
    };
    format!("{}--{}", kind.as_str(), what)
}

/// Judges `bytes` (written to `dir/name`) under `adapter`.
fn judge_bytes(
    adapter: &dyn Adapter,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    expected: &Expected,
    opts: &RunOptions,
) -> Result<CaseResult> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    let case = ManifestCase {
        id: name.to_string(),
        file: name.to_string(),
        expected: expected.clone(),
        description: String::new(),
    };
    Ok(runner::run_case(adapter, &case, &path, opts))
}

/// Budget of judge calls spent minimising one disagreement.
const MINIMISE_BUDGET: u32 = 200;

/// Shrinks `c` while the implementation keeps disagreeing in the same way
/// (same outcome kind, same deduplication key).
fn minimise(
    adapter: &dyn Adapter,
    dir: &Path,
    c: Candidate,
    kind: OutcomeKind,
    opts: &RunOptions,
) -> Result<(Vec<u8>, Expected, CaseResult)> {
    let want = key(kind, &c.expected);
    let mut budget = MINIMISE_BUDGET;
    // The write check only matters when the disagreement came from it.
    let opts = &RunOptions {
        writes: opts.writes && kind == OutcomeKind::Corrupting,
        ..opts.clone()
    };
    let still =
        |bytes: &[u8], expected: &Expected, budget: &mut u32| -> Result<Option<CaseResult>> {
            if *budget == 0 {
                return Ok(None);
            }
            *budget -= 1;
            let r = judge_bytes(adapter, dir, "candidate.qcow2", bytes, expected, opts)?;
            Ok((r.outcome.kind == kind && key(kind, expected) == want).then_some(r))
        };
    let mut bytes = c.bytes;
    let mut expected = c.expected;
    // 1. Shrink the spec (fewer bitmaps, writes, snapshots, extensions).
    if let Some(mut spec) = c.spec {
        'outer: loop {
            for smaller in quickcheck::Arbitrary::shrink(&spec) {
                let Ok(b) = build(&smaller) else { continue };
                let e = generator::expected::for_spec(&smaller);
                if still(&b.bytes, &e, &mut budget)?.is_some() {
                    spec = smaller;
                    bytes = b.bytes;
                    expected = e;
                    continue 'outer;
                }
                if budget == 0 {
                    break 'outer;
                }
            }
            break;
        }
    }
    // 2. Byte-level reduction: zero runs of the non-zero 512-byte blocks
    //    (never block 0, the header), halving the run length, each trial
    //    judged against the model's verdict of the trial image.
    let nonzero = |bytes: &[u8]| -> Vec<usize> {
        (1..bytes.len().div_ceil(512))
            .filter(|&b| {
                bytes[b * 512..((b + 1) * 512).min(bytes.len())]
                    .iter()
                    .any(|&x| x != 0)
            })
            .collect()
    };
    let mut run = (nonzero(&bytes).len() / 2).max(1);
    while budget > 0 {
        let blocks = nonzero(&bytes);
        let mut changed = false;
        for chunk in blocks.chunks(run) {
            let mut trial = bytes.clone();
            for &b in chunk {
                let end = ((b + 1) * 512).min(trial.len());
                trial[b * 512..end].fill(0);
            }
            let e = expected_from_model(&trial);
            if still(&trial, &e, &mut budget)?.is_some() {
                bytes = trial;
                expected = e;
                changed = true;
            }
            if budget == 0 {
                break;
            }
        }
        if !changed {
            if run == 1 {
                break;
            }
            run /= 2;
        }
    }
    // 3. Drop trailing zeros (whole 512-byte blocks) if that keeps the
    //    disagreement.
    let keep = nonzero(&bytes)
        .last()
        .map_or(512, |b| (b + 1) * 512)
        .min(bytes.len());
    if keep < bytes.len() && budget > 0 {
        let trial = bytes[..keep].to_vec();
        let e = expected_from_model(&trial);
        if still(&trial, &e, &mut budget)?.is_some() {
            bytes = trial;
            expected = e;
        }
    }
    let last = judge_bytes(adapter, dir, "minimised.qcow2", &bytes, &expected, opts)?;
    Ok((bytes, expected, last))
}

/// Options of a campaign.
pub struct CampaignOptions {
    pub seed: u64,
    pub duration: Duration,
    pub max_cases: Option<u64>,
    pub shard: Option<Shard>,
    pub out: PathBuf,
    pub run: RunOptions,
    pub progress: bool,
}

/// Runs the campaign until the duration or case budget is spent; resumes
/// from `OUT/state.json` when it belongs to the same implementation, seed
/// and shard.
pub fn run(adapter: &dyn Adapter, opts: &CampaignOptions) -> Result<State> {
    std::fs::create_dir_all(opts.out.join("findings"))
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let state_path = opts.out.join("state.json");
    let mut state = match std::fs::read_to_string(&state_path) {
        Ok(text) => {
            let s: State = serde_json::from_str(&text).context("state.json")?;
            if s.implementation == adapter.name() && s.seed == opts.seed && s.shard == opts.shard {
                s
            } else {
                anyhow::bail!(
                    "{} belongs to another campaign (implementation {}, seed {}); use a new --out",
                    state_path.display(),
                    s.implementation,
                    s.seed
                );
            }
        }
        Err(_) => State {
            implementation: adapter.name().to_string(),
            seed: opts.seed,
            shard: opts.shard,
            ..State::default()
        },
    };
    let scratch = tempfile::Builder::new()
        .prefix("qcow2-conform-campaign")
        .tempdir()?;
    let bar = indicatif::ProgressBar::new_spinner();
    if !opts.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} campaign {pos} cases {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let start = Instant::now();
    let mut ran = 0u64;
    while start.elapsed() < opts.duration && opts.max_cases.is_none_or(|m| ran < m) {
        let index = state.next_index;
        state.next_index += 1;
        if let Some(sh) = opts.shard {
            if index % sh.count != sh.index - 1 {
                continue;
            }
        }
        let Some(c) = candidate(opts.seed, index) else {
            continue;
        };
        let r = judge_bytes(
            adapter,
            scratch.path(),
            "case.qcow2",
            &c.bytes,
            &c.expected,
            &opts.run,
        )?;
        ran += 1;
        state.cases_run += 1;
        *state
            .outcomes
            .entry(r.outcome.kind.as_str().to_string())
            .or_default() += 1;
        bar.inc(1);
        let kind = r.outcome.kind;
        if matches!(kind, OutcomeKind::Pass | OutcomeKind::Recorded) {
            // Saved after every case, so an interrupted campaign resumes
            // exactly where it stopped.
            write_state(&state_path, &state)?;
            continue;
        }
        let k = key(kind, &c.expected);
        let n = state.disagreements.entry(k.clone()).or_default();
        *n += 1;
        if *n > 1 {
            write_state(&state_path, &state)?;
            continue;
        }
        bar.set_message(format!("minimising {k}"));
        let original = (c.bytes.len() as u64, nonzero_bytes(&c.bytes));
        let origin = c.origin.clone();
        let (bytes, expected, last) = minimise(adapter, scratch.path(), c, kind, &opts.run)?;
        save(
            &opts.out,
            scratch.path(),
            &k,
            index,
            origin,
            original,
            &bytes,
            expected,
            &last,
            adapter.name(),
        )?;
        bar.set_message(format!(
            "{} kinds of disagreement",
            state.disagreements.len()
        ));
        write_state(&state_path, &state)?;
    }
    bar.finish_and_clear();
    write_state(&state_path, &state)?;
    Ok(state)
}

fn nonzero_bytes(b: &[u8]) -> u64 {
    b.iter().filter(|&&x| x != 0).count() as u64
}

fn write_state(path: &Path, s: &State) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(s)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn save(
    out: &Path,
    scratch: &Path,
    key: &str,
    index: u64,
    origin: String,
    original: (u64, u64),
    bytes: &[u8],
    expected: Expected,
    last: &CaseResult,
    implementation: &str,
) -> Result<()> {
    let dir = out.join("findings").join(key);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("image.qcow2"), bytes)?;
    let mut reproduce = vec![format!(
        "qcow2-conform check findings/{key}/image.qcow2   # the model's verdict"
    )];
    reproduce.extend(last.observation.commands.iter().map(|c| {
        c.replace(
            &format!("{}/minimised.qcow2", scratch.display()),
            &format!("findings/{key}/image.qcow2"),
        )
    }));
    let f = Finding {
        key: key.to_string(),
        implementation: implementation.to_string(),
        case_index: index,
        origin,
        outcome: last.outcome.kind.as_str().to_string(),
        detail: last.outcome.detail.clone(),
        expected,
        original_bytes: original.0,
        original_nonzero_bytes: original.1,
        minimised_bytes: bytes.len() as u64,
        minimised_nonzero_bytes: nonzero_bytes(bytes),
        reproduce,
    };
    std::fs::write(
        dir.join("finding.json"),
        serde_json::to_string_pretty(&f)? + "\n",
    )?;
    Ok(())
}
