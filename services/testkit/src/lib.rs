//! Test support: a `redis-server` of the test's own, or a three-master Redis Cluster, on
//! loopback ports chosen at start.
//!
//! Every test starts its own server, so tests run in parallel and never share keys. The
//! server's files live in a temporary directory removed with it. A server is killed when its
//! handle drops; if the test process dies without unwinding (SIGKILL, abort), a small
//! watchdog shell started beside each server kills it within a second, so nothing is left
//! running.
//!
//! When `REDIS_URL` is set, [`RedisServer`] uses that server instead of starting one, and
//! isolates the test by a key namespace of its own ([`RedisServer::namespace`]); keys under
//! it are deleted on drop. Restarts are not possible then, and [`RedisServer::restart`]
//! says so with [`TestkitError::Unsupported`].

mod cluster;
mod hanging;
mod server;
mod traces;

pub use cluster::RedisCluster;
pub use hanging::Hanging;
pub use server::{Fsync, Options, RedisServer};
pub use traces::mentions;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TestkitError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },

    #[error("redis-server did not answer PING on port {port}; log tail:\n{log}")]
    NotReady { port: u16, log: String },

    #[error("cluster setup failed: {0}")]
    Cluster(String),

    #[error("not possible against an external REDIS_URL server: {0}")]
    Unsupported(&'static str),

    #[error(transparent)]
    Io(#[from] std::io::Error),

    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

pub type Result<T> = std::result::Result<T, TestkitError>;
