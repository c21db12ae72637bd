//! What differs between the databases the store runs on, and nothing else.
//!
//! The store's SQL is written once ([`crate::SqlStore`]): both databases take `$n` placeholders,
//! `RETURNING` and `ON CONFLICT`, and every column is text or a 64-bit integer. What is left differs in
//! kind, not in spelling, and is what a [`Backend`] answers: how a writing transaction shuts out the
//! other writers, how a read sees one instant, how migrations are kept from racing, and how the schema
//! names its two integer column types.

use std::{
    future::Future,
    ops::{Deref, DerefMut},
};

use sqlx::{Database, Pool, Transaction};
use tokio::sync::MutexGuard;

use crate::Result;

pub trait Backend: Send + Sync + 'static {
    type Db: Database;

    /// How the schema spells a 64-bit integer column.
    const INTEGER: &'static str;
    /// How the schema spells a 64-bit primary key the database numbers itself, in increasing order.
    const SERIAL: &'static str;

    /// A transaction that no writer in another process can interleave with until it ends: what it
    /// reads stays true until it commits, and the log head hands out numbers in commit order. (Writers
    /// in this process already queue on the store's mutex.)
    fn begin_write(
        pool: &Pool<Self::Db>,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>>> + Send;

    /// A read-only transaction whose reads all see the same committed state.
    fn begin_snapshot(
        pool: &Pool<Self::Db>,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>>> + Send;

    /// How many rows a statement changed.
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// The transaction migrations run in: processes opening the same database at once take turns.
    fn begin_migration(
        pool: &Pool<Self::Db>,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>>> + Send;
}

/// A writing transaction and this process's queue of writers, which it heads. Dropped without
/// [`Writing::commit`], it rolls back, and only then lets the next writer in.
pub struct Writing<'a, DB: Database> {
    // Declared before the queue so that it ends first.
    tx: Transaction<'static, DB>,
    _queue: MutexGuard<'a, ()>,
}

impl<'a, DB: Database> Writing<'a, DB> {
    pub(crate) fn new(tx: Transaction<'static, DB>, queue: MutexGuard<'a, ()>) -> Self {
        Self { tx, _queue: queue }
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl<DB: Database> Deref for Writing<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<DB: Database> DerefMut for Writing<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}
