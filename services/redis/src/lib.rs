//! What every service's Redis code shares: telling a command that failed because its
//! connection went away from one that Redis refused or that timed out, and sending such a
//! command once more.
//!
//! A pooled connection that sat idle while Redis restarted (a failover, a rescheduled pod) is
//! dead, and nothing finds out until a command is sent on it. That command fails with a
//! broken pipe or a reset connection; the connection manager then reconnects in the
//! background for the commands that follow. Without a second attempt, the first call after
//! every restart fails although Redis is back.
//!
//! A second attempt is only right for a command that may run twice: the first attempt may have
//! reached Redis and only its answer been lost. Reads qualify, and so do writes that leave the
//! same data when repeated (`HSETNX`, `SET` of the same value, a delete, a script written to
//! be repeated). A compare-and-set, a counter or a claim does not, and is sent once.

use std::future::Future;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisResult, ScriptInvocation};

/// Whether a command failed because its connection went away, not because of the command.
///
/// A command that timed out is not counted: it waited as long as its connection allows a
/// command to, and sending it again would make its caller wait that long twice. An error
/// Redis answered (a wrong type, a script error, `LOADING`) is not counted either: it came
/// over a working connection.
pub fn connection_lost(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal())
}

/// A command, a pipeline or a script call: something that can be sent, and sent again.
pub trait Command: Sync {
    fn send<'a, C, T>(&'a self, con: &'a mut C) -> impl Future<Output = RedisResult<T>> + Send + 'a
    where
        C: ConnectionLike + Send,
        T: FromRedisValue + Send + 'static;
}

impl Command for Cmd {
    fn send<'a, C, T>(&'a self, con: &'a mut C) -> impl Future<Output = RedisResult<T>> + Send + 'a
    where
        C: ConnectionLike + Send,
        T: FromRedisValue + Send + 'static,
    {
        self.query_async(con)
    }
}

impl Command for Pipeline {
    fn send<'a, C, T>(&'a self, con: &'a mut C) -> impl Future<Output = RedisResult<T>> + Send + 'a
    where
        C: ConnectionLike + Send,
        T: FromRedisValue + Send + 'static,
    {
        self.query_async(con)
    }
}

impl Command for ScriptInvocation<'_> {
    fn send<'a, C, T>(&'a self, con: &'a mut C) -> impl Future<Output = RedisResult<T>> + Send + 'a
    where
        C: ConnectionLike + Send,
        T: FromRedisValue + Send + 'static,
    {
        self.invoke_async(con)
    }
}

/// The answer to `command`, sent on a clone of `con`; when it found its connection lost, it
/// is sent once more on a new clone, which waits for the connection the failure made the
/// manager open.
///
/// Only for commands that may safely run twice (see the crate's documentation): the first
/// attempt may have been carried out with only its answer lost.
pub async fn resend_if_lost<C, T>(con: &C, command: &impl Command) -> RedisResult<T>
where
    C: ConnectionLike + Clone + Send,
    T: FromRedisValue + Send + 'static,
{
    let mut first = con.clone();
    match command.send(&mut first).await {
        Err(e) if connection_lost(&e) => {
            tracing::debug!(error = %e, "Redis connection lost; sending the command once more");
            let mut fresh = con.clone();
            command.send(&mut fresh).await
        }
        answer => answer,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use redis::{ErrorKind, RedisFuture, ServerErrorKind, Value};

    use super::*;

    fn io_error(kind: io::ErrorKind) -> RedisError {
        RedisError::from(io::Error::from(kind))
    }

    /// What Redis answers while it loads its data after a restart.
    fn refusal() -> RedisError {
        let loading = ErrorKind::Server(ServerErrorKind::BusyLoading);
        RedisError::from((loading, "Redis is loading the dataset in memory"))
    }

    #[test]
    fn a_broken_connection_is_lost_and_a_timeout_or_an_answer_is_not() {
        assert!(connection_lost(&io_error(io::ErrorKind::BrokenPipe)));
        assert!(connection_lost(&io_error(io::ErrorKind::ConnectionReset)));
        assert!(connection_lost(&io_error(io::ErrorKind::ConnectionRefused)));

        assert!(!connection_lost(&io_error(io::ErrorKind::TimedOut)));
        assert!(!connection_lost(&refusal()));
    }

    /// A connection answering each command with the next of its answers, shared by its
    /// clones; each clone is numbered, so a fresh one is told from the first.
    struct Scripted {
        answers: Arc<Mutex<VecDeque<RedisResult<Value>>>>,
        clones: Arc<AtomicU32>,
        number: u32,
        /// The numbers of the clones each command was sent on.
        sent_on: Arc<Mutex<Vec<u32>>>,
    }

    impl Clone for Scripted {
        fn clone(&self) -> Scripted {
            Scripted {
                answers: self.answers.clone(),
                clones: self.clones.clone(),
                number: self.clones.fetch_add(1, Ordering::SeqCst) + 1,
                sent_on: self.sent_on.clone(),
            }
        }
    }

    impl ConnectionLike for Scripted {
        fn req_packed_command<'a>(&'a mut self, _: &'a Cmd) -> RedisFuture<'a, Value> {
            let answer = self.next();
            Box::pin(async move { answer })
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            _: &'a Pipeline,
            _: usize,
            _: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            let answer = self.next().map(|v| vec![v]);
            Box::pin(async move { answer })
        }

        fn get_db(&self) -> i64 {
            0
        }
    }

    impl Scripted {
        fn next(&self) -> RedisResult<Value> {
            self.sent_on.lock().expect("lock").push(self.number);
            let mut answers = self.answers.lock().expect("lock");
            answers.pop_front().unwrap_or(Ok(Value::Int(0)))
        }
    }

    /// Sends one `GET` through `resend_if_lost` on a connection answering `answers` in turn;
    /// the answer, and the clones each attempt was sent on.
    async fn attempts(answers: Vec<RedisResult<Value>>) -> (RedisResult<i64>, Vec<u32>) {
        let con = Scripted {
            answers: Arc::new(Mutex::new(answers.into())),
            clones: Arc::new(AtomicU32::new(0)),
            number: 0,
            sent_on: Arc::new(Mutex::new(Vec::new())),
        };
        let mut get = redis::cmd("GET");
        get.arg("k");
        let answer = resend_if_lost(&con, &get).await;
        let sent_on = con.sent_on.lock().expect("lock").clone();
        (answer, sent_on)
    }

    #[tokio::test]
    async fn a_command_that_lost_its_connection_goes_once_more_on_a_fresh_clone() {
        let lost = io_error(io::ErrorKind::BrokenPipe);
        let (answer, seen) = attempts(vec![Err(lost), Ok(Value::Int(7))]).await;
        assert_eq!(answer.ok(), Some(7));
        assert_eq!(seen, [1, 2], "the second attempt ran on a clone of its own");

        // Once more, not again and again.
        let (answer, seen) = attempts(vec![
            Err(io_error(io::ErrorKind::BrokenPipe)),
            Err(io_error(io::ErrorKind::ConnectionRefused)),
            Ok(Value::Int(7)),
        ])
        .await;
        assert!(answer.is_err_and(|e| e.is_connection_refusal()));
        assert_eq!(seen.len(), 2);
    }

    #[tokio::test]
    async fn an_answer_a_timeout_or_a_refusal_is_final() {
        let (answer, seen) = attempts(vec![Ok(Value::Int(3)), Ok(Value::Int(4))]).await;
        assert_eq!(answer.ok(), Some(3));
        assert_eq!(seen.len(), 1);

        let (answer, seen) = attempts(vec![
            Err(io_error(io::ErrorKind::TimedOut)),
            Ok(Value::Int(4)),
        ])
        .await;
        assert!(answer.is_err_and(|e| e.is_timeout()));
        assert_eq!(seen.len(), 1);

        let (answer, seen) = attempts(vec![Err(refusal()), Ok(Value::Int(4))]).await;
        assert!(answer.is_err());
        assert_eq!(seen.len(), 1);
    }
}
