//! `generate --revision R` and `dump --revision R` for every draft: each
//! generated image gets the final-spec verdict its manifest entry states
//! (docs/revisions.md), and reads back under its own draft with the same
//! bitmap names.

use generator::Manifest;
use std::process::Command;

fn conform() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qcow2-conform"))
}

#[test]
fn every_draft_generates_judges_and_dumps() {
    for rev in spec_model::Revision::ALL {
        let dir = tempfile::tempdir().unwrap();
        let st = conform()
            .args([
                "generate",
                "--seed",
                "21",
                "--count",
                "12",
                "--revision",
                rev.as_str(),
                "--out",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "{rev}");
        let m = Manifest::from_json(
            &std::fs::read_to_string(dir.path().join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(m.cases.len(), 12);
        for case in &m.cases {
            let path = dir.path().join(&case.file);
            let r = spec_model::check_path(&path).unwrap();
            let e = &case.expected;
            assert_eq!(r.verdict, e.verdict, "{}: {:#?}", case.id, r.findings);
            if e.verdict == spec_model::Verdict::Invalid {
                let errors = r.rules_with(spec_model::Severity::Error);
                let mut want: Vec<&str> = e.rules.iter().map(String::as_str).collect();
                want.sort_unstable();
                assert_eq!(errors, want, "{}", case.id);
            }
            let out = conform()
                .args(["dump", "--json", "--revision", rev.as_str()])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                case.id,
                String::from_utf8_lossy(&out.stderr)
            );
            let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dump JSON");
            if *rev != spec_model::Revision::Final {
                assert_eq!(d["revision"], rev.as_str(), "{}", case.id);
                assert_eq!(
                    d["verdict"], "valid",
                    "{} under its own draft: {}",
                    case.id, d["findings"]
                );
            }
        }
    }
}
