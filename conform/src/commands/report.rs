//! `qcow2-conform report diff OLD.json NEW.json`: the outcome changes
//! between two run reports ([`crate::runner::report::diff`]); exit 1 on a
//! regression.

use crate::cli::ReportCommand;
use crate::runner::report::diff::{diff, ReportView};
use anyhow::Result;

pub fn run(cmd: &ReportCommand) -> Result<i32> {
    match cmd {
        ReportCommand::Diff { old, new, json } => {
            let d = diff(&ReportView::load(old)?, &ReportView::load(new)?);
            if *json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", d.text());
            }
            Ok(if d.regressions > 0 { 1 } else { 0 })
        }
    }
}
