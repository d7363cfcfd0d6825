//! Where `replay` writes: the service's store path, committed batch by batch, or for a dry
//! run inside one transaction that is rolled back at the end (or, beside a live persister,
//! one per batch, each rolled back at once).

use super::error::{Doing, OpsError};
use crate::store::{Incoming, StoreError, Stored, store_batch, store_in};
use sqlx::{Connection, PgPool, Postgres, Transaction};

/// How a replay writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// One committed transaction per batch: the real run.
    Commit,
    /// Savepoints of one transaction that is rolled back at the end, so later batches see
    /// earlier ones and the counts are exactly those of a real run.
    Rehearse,
    /// A transaction per batch, rolled back at once: what a dry run does while a persister
    /// consumes, which it may block no longer than one batch. The counts are those of a
    /// real run unless one message sits in the stream twice, in two batches.
    RehearseEachBatch,
}

pub struct ReplayWriter {
    pool: PgPool,
    mode: WriteMode,
    /// The one transaction of [`WriteMode::Rehearse`].
    rehearsal: Option<Transaction<'static, Postgres>>,
}

impl ReplayWriter {
    pub async fn new(pool: PgPool, mode: WriteMode) -> Result<Self, OpsError> {
        let rehearsal = match mode {
            WriteMode::Rehearse => Some(
                pool.begin()
                    .await
                    .doing("opening the dry run's transaction")?,
            ),
            WriteMode::Commit | WriteMode::RehearseEachBatch => None,
        };
        Ok(Self {
            pool,
            mode,
            rehearsal,
        })
    }

    pub async fn store(&mut self, batch: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
        if let Some(outer) = self.rehearsal.as_mut() {
            // A failed batch rolls back to its savepoint and leaves the earlier ones in place.
            let mut savepoint = outer.begin().await?;
            let stored = store_in(&mut savepoint, batch).await?;
            savepoint.commit().await?;
            return Ok(stored);
        }
        match self.mode {
            WriteMode::RehearseEachBatch => {
                let mut tx = self.pool.begin().await?;
                let stored = store_in(&mut tx, batch).await?;
                tx.rollback().await?;
                Ok(stored)
            }
            WriteMode::Commit | WriteMode::Rehearse => store_batch(&self.pool, batch).await,
        }
    }

    pub async fn finish(self) -> Result<(), OpsError> {
        if let Some(outer) = self.rehearsal {
            outer.rollback().await.doing("rolling the dry run back")?;
        }
        Ok(())
    }
}
