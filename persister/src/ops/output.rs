//! How a command's result reaches the operator: a short summary for a person, or exactly
//! one JSON document on stdout for a script (`--json`). Logs never go to stdout.

use super::error::{Doing, OpsError};
use serde::Serialize;

/// The `--json` flag every command takes.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Output {
    /// Print one JSON document instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// A command's result: serialised for `--json`, summarised otherwise.
pub trait Report: Serialize {
    fn summary(&self) -> String;
}

impl Output {
    pub fn print(self, report: &impl Report) -> Result<(), OpsError> {
        if self.json {
            let json = serde_json::to_string(report).doing("writing the report")?;
            println!("{json}");
        } else {
            println!("{}", report.summary());
        }
        Ok(())
    }
}
