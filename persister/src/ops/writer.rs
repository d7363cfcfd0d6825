//! Where `replay` writes: the service's store path, committed batch by batch, or for a dry
//! run inside one transaction that is rolled back at the end.

use anyhow::Context;
use coachwire_persister::store::{Incoming, StoreError, Stored, store_batch, store_in};
use sqlx::{Connection, PgPool, Postgres, Transaction};

/// Where batches go: committed one transaction each, or, in a dry run, into savepoints of
/// one transaction that is rolled back at the end — so later batches see earlier ones and
/// the counts are exactly those of a real run.
pub struct Writer {
    pool: PgPool,
    rehearsal: Option<Transaction<'static, Postgres>>,
}

impl Writer {
    pub async fn new(pool: PgPool, dry_run: bool) -> anyhow::Result<Self> {
        let rehearsal = if dry_run {
            Some(
                pool.begin()
                    .await
                    .context("opening the dry run's transaction")?,
            )
        } else {
            None
        };
        Ok(Self { pool, rehearsal })
    }

    pub async fn store(&mut self, batch: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
        let Some(outer) = self.rehearsal.as_mut() else {
            return store_batch(&self.pool, batch).await;
        };
        // A failed batch rolls back to its savepoint and leaves the earlier ones in place.
        let mut savepoint = outer.begin().await?;
        let stored = store_in(&mut savepoint, batch).await?;
        savepoint.commit().await?;
        Ok(stored)
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        if let Some(outer) = self.rehearsal {
            outer.rollback().await.context("rolling the dry run back")?;
        }
        Ok(())
    }
}
