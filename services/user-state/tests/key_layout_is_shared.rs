//! Ingest builds its log keys itself; the state store acknowledges entries in that log from
//! a script that names the key through the scheduler's layout. Both must agree, including
//! for workspace names with the characters that are escaped.

use beckon_ingest::log::{LogConfig, RedisLog};
use beckon_scheduler::keys::Keys;
use beckon_testkit::RedisServer;

#[tokio::test]
async fn log_keys_agree_with_the_shared_layout() {
    let server = RedisServer::start().expect("redis");
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_manager().await.expect("connect");
    let log = RedisLog::new(con, LogConfig::default());
    for workspace in ["w", "a}b:{c", "100%", "ünï:cødé"] {
        for partition in [0, 7, 63] {
            assert_eq!(
                log.stream(workspace, partition),
                Keys::new("bk", workspace, partition).log()
            );
        }
    }
}
