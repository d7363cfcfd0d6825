//! Whether a failure can pass: the one question that decides between retrying and giving
//! up, asked of Postgres connections (`db`) and of JetStream publishes (the persister)
//! alike, so both answer it with the same type.

/// Whether doing the same thing again, later, can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lasting {
    /// The other side is down, restarting, paused, electing a leader, read-only or full:
    /// wait and try again.
    Transient,
    /// A wrong address, password or database, a broken migration, bytes the server will
    /// never take: the same attempt fails the same way every time.
    Permanent,
}
