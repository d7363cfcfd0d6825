//! One module per client → server event of §4. Each handler reads as the contract's
//! order of checks: token still valid → payload valid → allowed → do it → answer.

pub mod join;
pub mod leave;
pub mod message;
pub mod reply;
pub mod sync;
pub mod typing;

use crate::app::App;
use coachwire_shared::envelope::Origin;
use coachwire_shared::error::Failure;
use socketioxide::extract::SocketRef;

/// The sending socket, as the room events that follow will name it.
fn origin(app: &App, s: &SocketRef) -> Origin {
    Origin {
        node: app.node.clone(),
        sid: s.id.to_string(),
    }
}

/// Maps a Postgres failure to the retryable answer, logging the cause once.
pub(crate) fn db_unavailable(e: sqlx::Error) -> Failure {
    tracing::warn!(error = %e, "database query failed");
    Failure::new(
        coachwire_shared::error::ErrorCode::Unavailable,
        "the database is unavailable; retry",
    )
}
