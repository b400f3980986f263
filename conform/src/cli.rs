//! Command-line arguments.

use clap::{Parser, Subcommand};
use spec_model::Revision;
use std::path::PathBuf;

/// Conformance checking and testing for the qcow2 persistent-bitmaps extension.
#[derive(Debug, Parser)]
#[command(name = "qcow2-conform", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an image against the spec. Exit status: 0 valid, 2 invalid,
    /// 3 unspecified, 1 the check could not run.
    Check {
        /// The image file.
        image: PathBuf,
        /// Print the JSON verdict instead of the human report.
        #[arg(long)]
        json: bool,
    },
    /// Print every structure of an image field by field.
    Dump {
        /// The image file.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The format revision to read the image under.
        #[arg(long, default_value = "final")]
        revision: Revision,
    },
    /// Generate images and their manifest (DIR/images/, DIR/manifest.json).
    /// The same arguments always give byte-identical files and manifest.
    Generate(GenerateArgs),
    /// Run implementations over a corpus and judge every case (exit status
    /// 2 when an outcome named by --fail-on occurs, 1 on errors).
    Run(RunArgs),
    /// Differential campaign: random valid and mutated images run through an
    /// implementation and judged against the model; every disagreement is
    /// minimised and saved under OUT/findings/ with a reproducer. Exit
    /// status 2 when this run saved a new finding (see --fail-on-findings),
    /// 1 on errors.
    Campaign(CampaignArgs),
    /// Build, verify or pack the shared corpus.
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// Compare run reports (`run --json`).
    #[command(subcommand)]
    Report(ReportCommand),
    /// List the rule catalogue.
    Rules {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the obligations catalogue: what the spec says each kind of
    /// implementation must do, whom each obligation binds and how a run
    /// observes it.
    Obligations {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script for SHELL on standard output
    /// (e.g. `qcow2-conform completions bash > /etc/bash_completion.d/qcow2-conform`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on standard output
    /// (`qcow2-conform man | man -l -`), or with --out write one page per
    /// command into DIR (qcow2-conform.1, qcow2-conform-run.1, ...).
    Man {
        /// Write qcow2-conform.1 and a page per subcommand into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Internal: one image through a bitmaps-unaware implementation (imago,
    /// qcow2-rs, qcow2, libqcow), guest data compared with the model, one
    /// JSON report on stdout. The runner's adapters run it as a child.
    #[command(hide = true)]
    AdapterProbe {
        #[arg(long = "impl")]
        implementation: String,
        #[arg(long)]
        image: PathBuf,
        /// Write the probe pattern at OFFSET, LEN bytes, instead of reading.
        #[arg(long, num_args = 2, value_names = ["OFFSET", "LEN"])]
        write: Option<Vec<u64>>,
    },
}

/// Which kind of images `generate` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Everything the spec allows in a valid image (notes and limits included).
    Spec,
    /// Within QEMU's documented limits, bitmaps QEMU will use.
    Qemu,
    /// 64 KiB clusters, up to 64 MiB virtual, up to 4 bitmaps.
    Small,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kind").args(["valid", "mutants", "rule", "revision"])))]
pub struct GenerateArgs {
    /// Seed of the run; each case derives its own seed from it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of cases (for the default mix: of valid images and of mutants each).
    #[arg(long, default_value_t = 16)]
    pub count: u64,
    /// Output directory (created; must be empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Only valid images.
    #[arg(long)]
    pub valid: bool,
    /// Only one-rule mutants, cycling through the mutation catalogue.
    #[arg(long)]
    pub mutants: bool,
    /// Only mutants that break this rule ID.
    #[arg(long, value_name = "ID")]
    pub rule: Option<String>,
    /// Images laid out as this draft revision describes.
    #[arg(long, value_name = "R")]
    pub revision: Option<Revision>,
    /// Bounds for the random specs.
    #[arg(long, value_enum, default_value = "spec")]
    pub profile: Profile,
    /// Replace the images and manifest of an earlier run in --out.
    #[arg(long)]
    pub force: bool,
    /// Print the manifest as JSON on stdout when done.
    #[arg(long)]
    pub json: bool,
}

/// Rows of `run`'s terminal matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatrixRows {
    /// One row per case up to 60 cases, else one per rule.
    Auto,
    Case,
    Rule,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Implementation under test: `qemu`; `imago`, `qcow2-rs`, `qcow2`,
    /// `qcow`, `libqcow` or `dissect@3.21` (bitmaps-unaware: guest data and
    /// writes judged); or
    /// `exec:TEMPLATE` for a program speaking the exec protocol
    /// (PROTOCOL.md in the corpus). Repeat for several; a repeat runs once.
    #[arg(long = "impl", value_name = "IMPL", required = true)]
    pub implementations: Vec<String>,
    /// Corpus directory (manifest.json and its images; never modified).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Write the full report (expected, observation, outcome, commands) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a JUnit XML report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the matrix as a static, self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Parallel workers (default: number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Outcomes that make the exit status non-zero: comma-separated, or
    /// `none`, `default` (all but pass, recorded and error; an error
    /// makes the run incomplete, exit 1, whatever this says), `all`.
    #[arg(long, value_name = "OUTCOMES")]
    pub fail_on: Option<String>,
    /// Time limit per process, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Address-space limit per process in MiB (`RLIMIT_AS`, as `prlimit --as`
    /// sets it; the commands shown say so); 0 for none.
    #[arg(long = "memory", value_name = "MIB", default_value_t = 8192)]
    pub memory_mib: u64,
    /// Skip the write check (no implementation writes any copy).
    #[arg(long)]
    pub read_only: bool,
    /// QEMU only: also run `qemu-img bitmap` add/merge/disable/enable/
    /// clear/remove, `convert --bitmaps` and `resize` on a copy of each
    /// valid image and check every result with the model.
    #[arg(long, conflicts_with = "read_only")]
    pub bitmap_ops: bool,
    /// Rows of the terminal matrix.
    #[arg(long, value_enum, default_value = "auto")]
    pub matrix: MatrixRows,
    /// Check every outcome against this expectations file (CI.md in the
    /// corpus kit):
    /// exit 2 listing each case that regressed or improved.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Record every outcome in this expectations file, under each
    /// implementation's name and version (other entries are kept); a
    /// recording run exits 0 whatever the outcomes.
    #[arg(long, value_name = "FILE")]
    pub write_expect: Option<PathBuf>,
    /// Run only the cases whose ID matches this glob (repeatable: any).
    #[arg(long = "case", value_name = "GLOB")]
    pub cases: Vec<String>,
    /// Run only the cases that break this rule ID (repeatable: any).
    #[arg(long = "rule", value_name = "ID")]
    pub rules: Vec<String>,
    /// Run only the cases that failed in this earlier JSON report.
    #[arg(long, value_name = "REPORT.json")]
    pub rerun: Option<PathBuf>,
    /// Sandbox every program the run starts (Landlock: writes only to the
    /// case's scratch directory, no network): `auto` when the kernel
    /// offers it (the report says when it did not), `require` or refuse
    /// to run, `off`.
    #[arg(long, value_enum, default_value = "auto")]
    pub sandbox: crate::runner::process::sandbox::Mode,
    /// Start first the (case, implementation) runs that took longest in
    /// this earlier JSON report, so a program that runs to its time limit
    /// waits while the rest goes on (only the order changes).
    #[arg(long, value_name = "REPORT.json")]
    pub order_from: Option<PathBuf>,
    /// How many programs that run past 5 s may wait out their time limit
    /// without holding a worker (at the lowest CPU priority; same limit,
    /// same outcome); 0 to keep each on its worker to the end.
    #[arg(long, value_name = "N", default_value_t = crate::runner::process::slots::DEFAULT_MAX_WAITING)]
    pub step_aside: usize,
    /// Seconds of processor time a program may spin without a read, a
    /// write or a wait (in any of its processes) before it is ended as a
    /// hang, rather than at its time limit; 0 to end hangs only at the
    /// limit.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::runner::process::stall::DEFAULT_STALL.as_secs_f64())]
    pub stall: f64,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Outcome changes per implementation and case between two JSON
    /// reports (timings and temporary paths ignored). Exit status 1 when
    /// an outcome regressed, 0 otherwise.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    /// The implementation: `qemu`, `exec:TEMPLATE`, or another adapter name
    /// (not needed with `--replay`, which uses qemu-live).
    #[arg(
        long = "impl",
        value_name = "IMPL",
        required_unless_present = "replay",
        default_value = "qemu-live",
        hide_default_value = true
    )]
    pub implementation: String,
    /// Seed of the case sequence.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How long to run: `90s`, `10m`, `1h` (`--time` is the same; bare
    /// numbers are seconds).
    #[arg(long, visible_alias = "time", default_value = "60s", value_parser = crate::campaign::parse_duration)]
    pub duration: std::time::Duration,
    /// Stop after this many cases (whichever comes first).
    #[arg(long)]
    pub max_cases: Option<u64>,
    /// Run only every N-th case starting at K (`K/N`), for CI job matrices.
    #[arg(long)]
    pub shard: Option<crate::campaign::Shard>,
    /// Output directory (state.json for resuming, findings/).
    #[arg(long, default_value = "campaign-out")]
    pub out: PathBuf,
    /// Per-process time limit in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Skip the write check.
    #[arg(long)]
    pub read_only: bool,
    /// Sandbox every program the campaign starts (as `run --sandbox`).
    #[arg(long, value_enum, default_value = "auto")]
    pub sandbox: crate::runner::process::sandbox::Mode,
    /// With `--impl qemu-live`: random operation sequences (guest writes,
    /// bitmap operations, restarts, crashes) against qemu-storage-daemon,
    /// judged by the semantic model, instead of random images; with
    /// `--impl qemu`, the same sequences through qemu-img bitmap and qemu-io.
    #[arg(long)]
    pub sequences: bool,
    /// With `--impl qemu-live`: random incremental backup chains (a full
    /// backup, guest writes, incrementals with blockdev-backup sync=bitmap
    /// in each bitmap mode, sync=incremental, and pull mode over NBD), each
    /// restored and compared byte for byte with the disk at every backup
    /// point; the semantic model says what each incremental must hold.
    #[arg(long, conflicts_with = "sequences")]
    pub backup_chains: bool,
    /// Coverage-guided: after each case read the gcov counters of QEMU's
    /// bitmap code (a `--coverage` build: `--impl qemu@VERSION-coverage`),
    /// beneath `GCOV_PREFIX` or `OUT/gcov`, and keep the cases that reach
    /// new arcs as seeds for later cases; writes `OUT/coverage.json`.
    /// Image campaigns only.
    #[arg(long, conflicts_with_all = ["sequences", "backup_chains", "replay"])]
    pub coverage_guided: bool,
    /// Replay one saved sequence or chain step by step against the model:
    /// a finding directory (finding.json or chain.json), such a file, or a
    /// sequence JSON. Exit 0 when every step agrees, 2 when one does not.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["sequences", "backup_chains"])]
    pub replay: Option<PathBuf>,
    /// With `--replay` or `--backup-chains`: print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Benchmarks only: run the operations with no oracle.
    #[arg(long, hide = true)]
    pub bare: bool,
    /// Benchmarks only: count findings without minimising or saving them.
    #[arg(long, hide = true, requires = "sequences")]
    pub no_minimise: bool,
    /// When the exit status is 2: `new` (this run saved at least one new
    /// finding) or `none` (never; exit 0 whatever was found).
    #[arg(long, value_enum, default_value = "new")]
    pub fail_on_findings: FailOnFindings,
}

impl CampaignArgs {
    /// The seed, `--shard`, `--out`, `--duration` and `--max-cases` of
    /// every campaign.
    pub fn plan(&self) -> crate::campaign::Plan {
        crate::campaign::Plan {
            seed: self.seed,
            shard: self.shard,
            out: self.out.clone(),
            budget: crate::campaign::Budget {
                duration: self.duration,
                max: self.max_cases,
            },
        }
    }
}

/// When `campaign` exits 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOnFindings {
    /// This run saved a new finding (a kind of disagreement not seen before).
    New,
    /// Never: findings are saved, the exit status stays 0.
    None,
}

#[derive(Debug, Subcommand)]
pub enum CorpusCommand {
    /// Regenerate the corpus (DIR/images, DIR/manifest.json, the vendor kit
    /// DIR/README.md, DIR/PROTOCOL.md, DIR/examples/, and DIR/SHA256SUMS)
    /// byte-identically from its fixed plan.
    Build {
        #[arg(default_value = "corpus")]
        dir: PathBuf,
    },
    /// Check every file's SHA-256 and every case's model verdict, rules and
    /// contents against the manifest. Exit 0 when all agree, 2 otherwise.
    Verify {
        #[arg(default_value = "corpus")]
        dir: PathBuf,
        /// Print the per-case results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the corpus, then write the vendor kit: a versioned tarball
    /// (`qcow2-conform-corpus-VERSION.tar.gz`, unpacking to a directory of
    /// that name) with the images, manifest, README, PROTOCOL.md, CI.md,
    /// ci.sh, the example adapters and SHA256SUMS (refused, exit 1, when
    /// verify fails).
    Pack {
        /// The corpus directory (relative to the working directory).
        #[arg(default_value = "corpus")]
        dir: PathBuf,
        /// Output directory for the tarball and its .sha256 file.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}
