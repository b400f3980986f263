//! How a campaign ends: the exit status its findings and an interruption
//! give. Shared by the image campaign and the live ones, which import it
//! from here rather than from each other.

use crate::cli::{CampaignArgs, FailOnFindings};
use crate::runner;

/// How a campaign (image cases, sequences or backup chains) ends: 1 when it was
/// interrupted (its state saved), 2 when it saved `new` findings and
/// `--fail-on-findings` is `new`, else 0; each said on stderr.
pub fn end_status(args: &CampaignArgs, new: usize) -> i32 {
    if let Some(why) = runner::process::signals::interrupted() {
        eprintln!("campaign: INCOMPLETE: {why}; the state was saved, the same command resumes");
        return 1;
    }
    if new > 0 && args.fail_on_findings == FailOnFindings::New {
        eprintln!(
            "campaign: {new} new finding(s) saved: exit status 2 (--fail-on-findings none to exit 0)"
        );
        return 2;
    }
    0
}
