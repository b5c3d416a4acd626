//! State written by one process is what a fresh process reads: nothing lives only in the
//! store instance. Both encodings are read back whichever one wrote.

mod support;

use beckon_testkit::RedisServer;
use beckon_user_state::StateStore;
use beckon_user_state::redis::Encoding;
use support::{busy_user, store};

#[tokio::test]
async fn a_fresh_store_reads_what_another_wrote() {
    let server = RedisServer::start().expect("redis");
    let before = busy_user("u1", 40);
    let json_user = busy_user("u2", 5);
    {
        let writer = store(&server).await;
        writer.save(&before, 0).await.expect("save");
        let json_writer = writer.clone().with_encoding(Encoding::Json);
        json_writer.save(&json_user, 0).await.expect("save json");
    }

    let reader = store(&server).await;
    assert_eq!(reader.load("w", "u1").await.expect("load"), Some(before));
    assert_eq!(reader.load("w", "u2").await.expect("load"), Some(json_user));
    assert_eq!(reader.load("w", "nobody").await.expect("load"), None);
}
