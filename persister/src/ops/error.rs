//! Why an operator command failed: the one line (after the binary's name) the operator
//! reads on stderr before exit 1.
//!
//! Each failed step keeps its cause and says what it was doing ("removing dead letter …:
//! …"), because an operator acts on the step, not on a bare "request timed out".

use coachwire_shared::db::ConnectError;
use coachwire_shared::nats::NatsError;

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Postgres(#[from] ConnectError),
    /// A step failed: `doing` names it, `cause` says why.
    #[error("{doing}: {cause}")]
    Step { doing: String, cause: Cause },
    /// The command stopped before it changed anything (more), and says why.
    #[error("{0}")]
    Refused(String),
}

/// Names the step a fallible call was, as [`OpsError::Step`].
pub trait Doing<T> {
    fn doing(self, doing: impl Into<String>) -> Result<T, OpsError>;
}

impl<T, E: Into<Cause>> Doing<T> for Result<T, E> {
    fn doing(self, doing: impl Into<String>) -> Result<T, OpsError> {
        self.map_err(|cause| OpsError::Step {
            doing: doing.into(),
            cause: cause.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_reads_as_what_it_was_doing_and_why() {
        let failed: Result<(), std::io::Error> = Err(std::io::Error::other("timed out"));
        let e = failed.doing("removing dead letter 7").expect_err("failed");
        assert_eq!(e.to_string(), "removing dead letter 7: timed out");
    }
}
