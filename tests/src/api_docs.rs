//! The official AsyncAPI and OpenAPI validators (npm `@asyncapi/parser` and
//! `@apidevtools/swagger-parser`), run on ingest's documents through
//! `tests/js/validate_api_docs.mjs`.
//!
//! A Rust re-implementation of either spec's rules would only check our reading of it;
//! the validators are what documentation tools and code generators will run.

use crate::js::NodeScript;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Loading both validators and parsing takes a few seconds; a minute means it hangs.
const VALIDATION_WAIT: Duration = Duration::from_secs(60);

/// What the validators said.
#[derive(Debug)]
pub struct Verdict {
    /// Both documents valid: no AsyncAPI diagnostic of severity error, and swagger-parser's
    /// `validate()` passed.
    pub valid: bool,
    /// The script's report:
    /// `{ valid, asyncapi: { errors, warnings, … }, openapi: { errors, … } }`.
    pub report: Value,
}

/// Validates the two documents (written to temporary files, pretty-printed so that the
/// line numbers of diagnostics point somewhere readable).
pub async fn validate(asyncapi: &Value, openapi: &Value) -> Result<Verdict> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/node_modules");
    for package in ["@asyncapi/parser", "@apidevtools/swagger-parser"] {
        if !dir.join(package).is_dir() {
            bail!("{package} is not installed: run `npm ci` in tests/js");
        }
    }
    let files = TempFiles::write(&[("asyncapi", asyncapi), ("openapi", openapi)])?;
    let NodeScript {
        mut child,
        stdin,
        mut stdout,
    } = NodeScript::spawn("validate_api_docs.mjs", &files.args())?;
    drop(stdin);
    let mut out = String::new();
    let status = tokio::time::timeout(VALIDATION_WAIT, async {
        stdout.read_to_string(&mut out).await?;
        child.wait().await
    })
    .await
    .context("validate_api_docs.mjs did not finish")?
    .context("running validate_api_docs.mjs")?;
    let report: Value = serde_json::from_str(out.trim())
        .with_context(|| format!("validate_api_docs.mjs printed no JSON report: {out:?}"))?;
    match status.code() {
        Some(0) | Some(1) => Ok(Verdict {
            valid: status.success() && report["valid"] == true,
            report,
        }),
        _ => bail!("validate_api_docs.mjs could not validate ({status}): {report}"),
    }
}

/// Files removed when dropped, so a failing test leaves nothing behind.
struct TempFiles(Vec<PathBuf>);

impl TempFiles {
    fn write(documents: &[(&str, &Value)]) -> Result<Self> {
        let run = uuid::Uuid::new_v4().simple();
        let mut files = TempFiles(Vec::new());
        for (name, document) in documents {
            let path = std::env::temp_dir().join(format!("cw-{name}-{run}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(document)?)
                .with_context(|| format!("writing {}", path.display()))?;
            files.0.push(path);
        }
        Ok(files)
    }

    fn args(&self) -> Vec<String> {
        self.0.iter().map(|p| p.display().to_string()).collect()
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path); // best effort: it is a temp file
        }
    }
}
