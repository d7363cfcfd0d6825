//! `coachwire-soak`: the randomized fault soak (see [`coachwire_testkit::soak`]).
//!
//! Prints the run's progress and its report table on stdout (the services' logs go to
//! stderr), writes the report as JSON, and exits non-zero on any anomaly or any process
//! left unready.

use anyhow::Context;
use clap::Parser;
use coachwire_testkit::soak::{self, SoakSettings, report};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let settings = SoakSettings::parse();
    let report = soak::run(&settings).await?;
    println!("{}", report::render(&report));
    if !report.evidence.is_empty() {
        println!("evidence:\n{}", report.evidence);
    }
    if let Some(dir) = settings.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&settings.json, json)
        .with_context(|| format!("writing {}", settings.json.display()))?;
    println!("report: {}", settings.json.display());
    Ok(match report.passed() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}
