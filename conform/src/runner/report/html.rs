//! `--html`: the run as one static, self-contained page (no external
//! stylesheet, script, font or image), laid out like JSONTestSuite's
//! results matrix: a row per case, grouped by rule, a column per
//! implementation, each cell coloured by its outcome. Hovering or focusing
//! a cell shows why the judge decided so and the commands that reproduce
//! it (and, for a crash or hang, the end of the program's standard error).
//! Long descriptions show one line and expand (`<details>`); each rule
//! group is its own `<tbody>` that a click on its heading collapses; the
//! header row stays in view (sticky); a filter per implementation column
//! shows only the rows with a chosen outcome there (also settable from the
//! page's address: `#filter=IMPL:OUTCOME`, `failing` for any failing one).
//!
//! Every outcome cell carries `data-case`, `data-impl` and `data-outcome`
//! attributes, so that tools (and the Chromium test) can read the matrix
//! back and compare it with the JSON report.

use crate::runner::judge::OutcomeKind;
use crate::runner::report::{CaseResult, CaseRun, RunReport};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values
/// ([`crate::runner::report::sanitise::markup`]: control characters, bidirectional
/// controls and noncharacters shown as visible escapes).
pub fn escape(s: &str) -> String {
    crate::runner::report::sanitise::markup(s)
}

/// What each outcome means, for the legend.
fn meaning(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Pass => "behaviour allowed by the expected verdict",
        OutcomeKind::Lenient => {
            "used a bitmap the spec says must not be used (invalid or inconsistent extension, in_use, incompatible extra data)"
        }
        OutcomeKind::Strict => {
            "refused a conforming image or bitmap (not for a documented limit)"
        }
        OutcomeKind::Mismatch => "accepted, but names, granularity, flags or bits differ from the model",
        OutcomeKind::Corrupting => {
            "a write left the image non-conforming or its bits wrong, or left autoclear bit 0 set without maintaining bitmaps"
        }
        OutcomeKind::Crash => "killed by a signal, a sanitizer report, or no protocol answer",
        OutcomeKind::Hang => "ran past the time limit; its process group was killed",
        OutcomeKind::Recorded => "the spec is silent: behaviour kept, not judged",
        OutcomeKind::Error => {
            "the runner could not set the case up (a companion file or the image copy): not judged, not the implementation's fault"
        }
    }
}

fn verdict_label(verdict: spec_model::Verdict) -> &'static str {
    match verdict {
        spec_model::Verdict::Valid => "must accept",
        spec_model::Verdict::Invalid => "must not use its bitmaps",
        spec_model::Verdict::Unspecified => "implementation-defined",
    }
}

const STYLE: &str = r#"
:root { --pass:#2e9e44; --lenient:#f0b400; --strict:#3d7fd1; --mismatch:#ef7d1a;
  --corrupting:#c0181f; --crash:#111; --hang:#8a3ab9; --recorded:#b9bec4; }
* { box-sizing: border-box; }
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 16px 20px; color: #1d2125; background: #fafbfc; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: #555; margin: 0 0 10px; }
.meta code { background: #eef0f2; padding: 0 4px; border-radius: 3px; }
.alarm { background: #c0181f; color: #fff; padding: 6px 10px; border-radius: 4px; font-weight: 600; }
.top { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
table { border-collapse: collapse; }
.totals td, .totals th { padding: 3px 8px; border: 1px solid #dde1e5; text-align: right; background: #fff; }
.totals th:first-child, .totals td:first-child { text-align: left; }
.totals td.zero { color: #c3c7cc; }
.legend { list-style: none; padding: 0; margin: 0; columns: 2; column-gap: 24px; max-width: 820px; }
.legend li { margin: 0 0 4px; break-inside: avoid; }
.sw { display: inline-block; min-width: 82px; text-align: center; padding: 1px 6px; border-radius: 3px;
  font-weight: 600; margin-right: 6px; }
.o-pass { background: var(--pass); color: #fff; }
.o-lenient { background: var(--lenient); color: #1d2125; }
.o-strict { background: var(--strict); color: #fff; }
.o-mismatch { background: var(--mismatch); color: #1d2125; }
.o-corrupting { background: var(--corrupting); color: #fff; }
.o-crash { background: var(--crash); color: #fff; }
.o-hang { background: var(--hang); color: #fff; }
.o-recorded { background: var(--recorded); color: #1d2125; }
.o-none { background: repeating-linear-gradient(45deg,#eee,#eee 4px,#fff 4px,#fff 8px); color: #777; }
.controls { margin: 12px 0 8px; }
#matrix { background: #fff; }
#matrix th, #matrix td { border: 1px solid #dde1e5; padding: 3px 6px; vertical-align: top; }
#matrix thead th { position: sticky; top: 0; background: #2b3137; color: #fff; text-align: left; z-index: 2; }
#matrix tr.group th { background: #eef0f2; text-align: left; font-weight: 600; }
#matrix tr.group th .n { color: #666; font-weight: normal; }
td.case .id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-weight: 600; }
td.case .desc { color: #555; font-size: 12px; max-width: 560px; }
td.case .file { color: #888; font-size: 11px; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
td.exp { white-space: nowrap; }
.v { display: inline-block; padding: 0 6px; border-radius: 3px; border: 2px solid; font-weight: 600; }
.v-valid { border-color: var(--pass); color: #1f7a32; }
.v-invalid { border-color: var(--corrupting); color: #a3141a; }
.v-unspecified { border-color: #8d949b; color: #555; }
td.exp .rules, td.exp .ext { font-size: 11px; color: #555; font-family: ui-monospace, "DejaVu Sans Mono", monospace; white-space: normal; }
td.cell { position: relative; text-align: center; vertical-align: middle; font-weight: 600; min-width: 96px; cursor: help; }
td.cell .tip { display: none; position: absolute; top: 100%; right: 0; z-index: 5; width: 620px;
  text-align: left; font-weight: normal; background: #fff; color: #1d2125; border: 1px solid #8d949b;
  box-shadow: 0 4px 14px rgba(0,0,0,.25); padding: 8px 10px; border-radius: 4px; }
td.cell:hover .tip, td.cell:focus .tip { display: block; }
.tip ul { margin: 4px 0; padding-left: 18px; }
.tip pre { white-space: pre-wrap; word-break: break-all; background: #f3f4f6; padding: 6px; margin: 4px 0 0;
  font-size: 11px; max-height: 260px; overflow: auto; }
body.only-failing tr.clean { display: none; }
td.case .desc summary { cursor: pointer; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 560px; }
td.case .desc details[open] summary { white-space: normal; }
td.case .desc .more { white-space: pre-wrap; max-height: 240px; overflow: auto; }
#matrix tr.group th { cursor: pointer; user-select: none; }
#matrix tr.group th::before { content: "\25BE  "; }
#matrix tbody.collapsed tr.group th::before { content: "\25B8  "; }
#matrix tbody.collapsed tr:not(.group) { display: none; }
#matrix tr.filters th { position: sticky; top: 27px; background: #eef0f2; color: #1d2125; z-index: 2; font-weight: normal; }
#matrix tr.filters select { max-width: 120px; font-size: 12px; }
#matrix tr.filtered, #matrix tbody.filtered-out { display: none; }
.controls button { font-size: 12px; margin-left: 6px; }
footer { margin-top: 16px; color: #777; font-size: 12px; }
"#;

const SCRIPT: &str = r#"
document.getElementById('only-failing').addEventListener('change', function (e) {
  document.body.classList.toggle('only-failing', e.target.checked);
});
document.querySelectorAll('#matrix tr.group').forEach(function (row) {
  row.addEventListener('click', function () {
    row.parentElement.classList.toggle('collapsed');
  });
});
function setAll(collapsed) {
  document.querySelectorAll('#matrix tbody.grp').forEach(function (b) {
    b.classList.toggle('collapsed', collapsed);
  });
}
document.getElementById('collapse-all').addEventListener('click', function () { setAll(true); });
document.getElementById('expand-all').addEventListener('click', function () { setAll(false); });
var failing = ['lenient', 'strict', 'mismatch', 'corrupting', 'crash', 'hang'];
function applyFilters() {
  var wants = [];
  document.querySelectorAll('#matrix select[data-filter-impl]').forEach(function (sel) {
    if (sel.value !== 'any') { wants.push([sel.getAttribute('data-filter-impl'), sel.value]); }
  });
  document.querySelectorAll('#matrix tr[data-case]').forEach(function (row) {
    var show = wants.every(function (w) {
      var cell = Array.prototype.find.call(row.querySelectorAll('td[data-impl]'), function (td) {
        return td.getAttribute('data-impl') === w[0];
      });
      var got = cell ? cell.getAttribute('data-outcome') : 'none';
      return w[1] === 'failing' ? failing.indexOf(got) >= 0 : got === w[1];
    });
    row.classList.toggle('filtered', !show);
  });
  document.querySelectorAll('#matrix tbody.grp').forEach(function (b) {
    b.classList.toggle('filtered-out', b.querySelector('tr[data-case]:not(.filtered)') === null);
  });
}
document.querySelectorAll('#matrix select[data-filter-impl]').forEach(function (sel) {
  sel.addEventListener('change', applyFilters);
});
(function fromAddress() {
  var m = /[#&]filter=([^&]*)/.exec(window.location.hash);
  if (!m) { return; }
  decodeURIComponent(m[1]).split(',').forEach(function (f) {
    var i = f.lastIndexOf(':');
    if (i < 0) { return; }
    document.querySelectorAll('#matrix select[data-filter-impl]').forEach(function (sel) {
      if (sel.getAttribute('data-filter-impl') === f.slice(0, i)) { sel.value = f.slice(i + 1); }
    });
  });
  applyFilters();
})();
"#;

/// Characters of a description shown before it is expanded.
const DESCRIPTION_LINE: usize = 110;

/// A case's description as HTML: one line; a longer one (or one of
/// several lines) as a `<details>` whose summary is its first line, cut.
fn description(d: &str) -> String {
    let first = d.lines().next().unwrap_or("");
    if d.chars().count() <= DESCRIPTION_LINE && !d.contains('\n') {
        return escape(d);
    }
    let cut: String = first.chars().take(DESCRIPTION_LINE).collect();
    format!(
        "<details><summary>{}…</summary><div class=\"more\">{}</div></details>",
        escape(&cut),
        escape(d)
    )
}

/// The rule part of a case ID (`bitmaps.dir.type/0003` -> `bitmaps.dir.type`).
fn group_of(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

fn tooltip(o: &mut String, case: &CaseRun, r: &CaseResult) {
    let kind = r.outcome.kind;
    let _ = write!(
        o,
        "<div class=\"tip\"><b><span class=\"sw o-{k}\">{k}</span>{impl_} on {id}</b>",
        k = kind.as_str(),
        impl_ = escape(&r.implementation),
        id = escape(&case.id)
    );
    if !r.outcome.detail.is_empty() {
        o.push_str("<ul>");
        for d in &r.outcome.detail {
            let _ = write!(o, "<li>{}</li>", escape(d));
        }
        o.push_str("</ul>");
    }
    let obs = &r.observation;
    let mut facts = vec![format!("{} ms", obs.duration_ms)];
    if let Some(s) = obs.exit_status {
        facts.push(format!("last exit status {s}"));
    }
    if let Some(w) = &obs.write {
        facts.push(format!(
            "wrote {} bytes at {}: {}",
            w.len,
            w.offset,
            if w.written { "ok" } else { "refused" }
        ));
    }
    let _ = write!(o, "<div>{}</div>", escape(&facts.join("; ")));
    for n in &obs.notes {
        let _ = write!(o, "<div>note: {}</div>", escape(n));
    }
    if matches!(kind, OutcomeKind::Crash | OutcomeKind::Hang) && !obs.stderr_excerpt.is_empty() {
        let _ = write!(
            o,
            "<div>standard error (end):</div><pre class=\"stderr\">{}</pre>",
            escape(&obs.stderr_excerpt)
        );
    }
    if !obs.commands.is_empty() {
        let _ = write!(
            o,
            "<div>reproduce:</div><pre>{}</pre>",
            escape(&obs.commands.join("\n"))
        );
    }
    o.push_str("</div>");
}

/// The whole page.
pub fn html(report: &RunReport) -> String {
    let impls = &report.implementations;
    let mut o = String::with_capacity(4096 + report.cases.len() * 1024);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        o,
        "<title>qcow2-conform run: {}</title>",
        escape(&report.corpus)
    );
    let _ = writeln!(o, "<style>{STYLE}</style>\n</head>");
    let _ = writeln!(o, "<body data-format=\"{}\">", escape(&report.format));
    o.push_str("<h1>qcow2 persistent bitmaps: conformance matrix</h1>\n");
    let results: usize = report.cases.iter().map(|c| c.results.len()).sum();
    let _ = writeln!(
        o,
        "<p class=\"meta\">corpus <code>{}</code> · {} cases × {} implementation(s) = {results} results · {:.1} s · report format <code>{}</code></p>",
        escape(&report.corpus),
        report.cases.len(),
        impls.len(),
        report.duration_ms as f64 / 1000.0,
        escape(&report.format)
    );
    if let Some(p) = &report.provenance {
        let _ = writeln!(
            o,
            "<p class=\"meta provenance\">{}</p>",
            escape(&p.summary())
        );
        if let Some(s) = p.sandbox.as_ref().filter(|s| !s.sandboxed) {
            let _ = writeln!(
                o,
                "<p class=\"alarm\">The implementations ran without a sandbox (--sandbox {}): {}</p>",
                escape(&s.mode),
                escape(&s.detail)
            );
        }
    }
    if !report.corpus_unchanged {
        let _ = writeln!(
            o,
            "<p class=\"alarm\">The corpus changed during the run: {}</p>",
            escape(&report.corpus_changes.join("; "))
        );
    }

    // Totals and legend side by side.
    o.push_str("<div class=\"top\">\n<div>\n<h2>Totals</h2>\n<table class=\"totals\">\n<tr><th>implementation</th>");
    for k in OutcomeKind::ALL {
        let _ = write!(o, "<th><span class=\"sw o-{k}\">{k}</span></th>");
    }
    o.push_str("</tr>\n");
    for name in impls {
        let t = report.totals.get(name).cloned().unwrap_or_default();
        let _ = write!(o, "<tr data-impl=\"{n}\"><td>{n}</td>", n = escape(name));
        for k in OutcomeKind::ALL {
            let n = t.get(k.as_str()).copied().unwrap_or(0);
            let class = if n == 0 { " class=\"zero\"" } else { "" };
            let _ = write!(o, "<td{class} data-outcome=\"{k}\">{n}</td>");
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table>\n</div>\n<div>\n<h2>Legend</h2>\n<ul class=\"legend\">\n");
    for k in OutcomeKind::ALL {
        let _ = writeln!(
            o,
            "<li><span class=\"sw o-{k}\">{k}</span>{}</li>",
            escape(meaning(k))
        );
    }
    use spec_model::Verdict as V;
    for verdict in [V::Valid, V::Invalid, V::Unspecified] {
        let _ = writeln!(
            o,
            "<li><span class=\"v v-{v}\">{v}</span>expected verdict: {}</li>",
            verdict_label(verdict),
            v = verdict.as_str()
        );
    }
    o.push_str("</ul>\n</div>\n</div>\n");

    o.push_str(
        "<div class=\"controls\"><label><input type=\"checkbox\" id=\"only-failing\"> only cases with an outcome other than pass or recorded</label><button type=\"button\" id=\"collapse-all\">collapse all groups</button><button type=\"button\" id=\"expand-all\">expand all</button> · click a group to fold it · hover or focus a cell for the reason and the commands that reproduce it</div>\n",
    );

    // The matrix, grouped by rule in order of first appearance.
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&CaseRun>> = BTreeMap::new();
    for c in &report.cases {
        let g = group_of(&c.id);
        groups
            .entry(g)
            .or_insert_with(|| {
                order.push(g);
                Vec::new()
            })
            .push(c);
    }
    o.push_str("<table id=\"matrix\">\n<thead><tr><th>case</th><th>expected</th>");
    for name in impls {
        let _ = write!(
            o,
            "<th data-impl=\"{n}\" title=\"{n}\">{n}</th>",
            n = escape(name)
        );
    }
    o.push_str("</tr>\n<tr class=\"filters\"><th>show rows where</th><th></th>");
    for name in impls {
        let _ = write!(
            o,
            "<th><select data-filter-impl=\"{n}\" title=\"filter by {n}'s outcome\"><option value=\"any\">any outcome</option><option value=\"failing\">failing</option>",
            n = escape(name)
        );
        for k in OutcomeKind::ALL {
            let _ = write!(o, "<option value=\"{k}\">{k}</option>");
        }
        o.push_str("</select></th>");
    }
    o.push_str("</tr></thead>\n");
    let width = impls.len() + 2;
    for g in order {
        let cases = &groups[g];
        let failing = cases
            .iter()
            .flat_map(|c| &c.results)
            .filter(|r| r.outcome.kind.fails_by_default())
            .count();
        let clean = if failing == 0 { " clean" } else { "" };
        let _ = writeln!(
            o,
            "<tbody class=\"grp\" data-group=\"{}\">\n<tr class=\"group{clean}\"><th colspan=\"{width}\">{} <span class=\"n\">({} case(s){})</span></th></tr>",
            escape(g),
            escape(g),
            cases.len(),
            if failing > 0 {
                format!(", {failing} failing result(s)")
            } else {
                String::new()
            }
        );
        for c in cases {
            let clean = if c.results.iter().any(|r| r.outcome.kind.fails_by_default()) {
                ""
            } else {
                " class=\"clean\""
            };
            let _ = write!(
                o,
                "<tr{clean} data-case=\"{id}\"><td class=\"case\"><div class=\"id\" title=\"{file}\">{id}</div><div class=\"desc\">{desc}</div></td>",
                id = escape(&c.id),
                desc = description(&c.description),
                file = escape(&c.file)
            );
            let e = &c.expected;
            let _ = write!(
                o,
                "<td class=\"exp\" data-verdict=\"{v}\"><span class=\"v v-{v}\" title=\"{label}\">{v}</span><div class=\"ext\">extension {ext}</div>",
                v = escape(e.verdict.as_str()),
                label = verdict_label(e.verdict),
                ext = escape(generator::expected::extension_name(e.bitmaps_extension))
            );
            if !e.rules.is_empty() {
                let _ = write!(
                    o,
                    "<div class=\"rules\">{}</div>",
                    escape(&e.rules.join(" "))
                );
            }
            o.push_str("</td>");
            for name in impls {
                match c.results.iter().find(|r| r.implementation == *name) {
                    Some(r) => {
                        let k = r.outcome.kind;
                        let _ = write!(
                            o,
                            "<td class=\"cell o-{k}\" tabindex=\"0\" data-case=\"{id}\" data-impl=\"{n}\" data-outcome=\"{k}\"><span>{k}</span>",
                            id = escape(&c.id),
                            n = escape(name)
                        );
                        tooltip(&mut o, c, r);
                        o.push_str("</td>");
                    }
                    None => {
                        let _ = write!(
                            o,
                            "<td class=\"cell o-none\" data-case=\"{id}\" data-impl=\"{n}\" data-outcome=\"none\">not run</td>",
                            id = escape(&c.id),
                            n = escape(name)
                        );
                    }
                }
            }
            o.push_str("</tr>\n");
        }
        o.push_str("</tbody>\n");
    }
    o.push_str("</table>\n");
    let _ = writeln!(
        o,
        "<footer>Written by qcow2-conform {}. Outcomes as defined in DESIGN.md; expected verdicts from the corpus manifest.</footer>",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(o, "<script>{SCRIPT}</script>\n</body>\n</html>");
    o
}

#[cfg(test)]
mod tests {
    use crate::runner::report::html::*;
    use crate::runner::{judge::Outcome, observation::Observation};
    use generator::Expected;

    fn case(id: &str, kinds: &[(&str, OutcomeKind)]) -> CaseRun {
        CaseRun {
            id: id.into(),
            file: format!("images/{id}.qcow2"),
            description: "a <case> & \"more\"".into(),
            expected: Expected {
                verdict: spec_model::Verdict::Invalid,
                rules: vec!["bitmaps.dir.type".into()],
                bitmaps_extension: spec_model::ExtensionState::Consistent,
                bitmaps: None,
            },
            results: kinds
                .iter()
                .map(|(i, k)| CaseResult {
                    implementation: (*i).into(),
                    outcome: Outcome::new(*k, vec!["why <it> happened".into()], Default::default()),
                    observation: Observation {
                        commands: vec!["qemu-img info 'a b'".into()],
                        ..Observation::default()
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn every_cell_is_tagged_and_text_escaped() {
        let report = RunReport::new(
            "/tmp/c<1>".into(),
            vec!["qemu".into(), "exec:x \"y\"".into()],
            vec![
                case(
                    "bitmaps.dir.type/0001",
                    &[
                        ("qemu", OutcomeKind::Lenient),
                        ("exec:x \"y\"", OutcomeKind::Pass),
                    ],
                ),
                case("valid/0002", &[("qemu", OutcomeKind::Pass)]),
            ],
            vec![],
            1234,
        );
        let page = html(&report);
        assert!(page.contains(
            "data-case=\"bitmaps.dir.type/0001\" data-impl=\"exec:x &quot;y&quot;\" data-outcome=\"pass\""
        ));
        assert!(page.contains("data-case=\"valid/0002\" data-impl=\"qemu\" data-outcome=\"pass\""));
        assert!(page.contains("data-outcome=\"none\""));
        assert!(page.contains("why &lt;it&gt; happened"));
        assert!(page.contains("qemu-img info &#39;a b&#39;"));
        assert!(!page.contains("<case>"));
        assert!(!page.contains("http"), "the page must not load anything");
        assert_eq!(page.matches("class=\"cell ").count(), 4);
        // One collapsible group per rule, a filter per implementation.
        assert_eq!(page.matches("<tbody class=\"grp\"").count(), 2);
        assert_eq!(page.matches("<select data-filter-impl=").count(), 2);
    }

    #[test]
    fn long_descriptions_fold_to_one_line() {
        assert_eq!(description("short & plain"), "short &amp; plain");
        let long = format!("{}\nsecond line", "x".repeat(300));
        let d = description(&long);
        assert!(d.starts_with("<details><summary>"), "{d}");
        assert!(d.contains(&format!("{}…</summary>", "x".repeat(DESCRIPTION_LINE))));
        assert!(d.contains("second line</div></details>"));
    }
}
