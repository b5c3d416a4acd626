//! The Redis key store answers claim, complete and release exactly as the in-memory one,
//! under keys hash-tagged by the user's partition and with the configured expiry.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use beckon_core::partition::partition_of;
use beckon_gateway::{Claim, KeyStore, MemoryKeyStore, SendKey};
use support::redis_server;

/// One fixed sequence of operations, and what the store answered to each claim.
async fn script(store: &dyn KeyStore) -> Vec<Claim> {
    let k1 = SendKey::new("acme", "ada", "k1");
    let k2 = SendKey::new("acme", "ada", "k2");
    let other_user = SendKey::new("acme", "bob", "k9");
    let mut answers = Vec::new();

    answers.push(store.claim(k1, "t1").await.unwrap()); // new
    answers.push(store.claim(k1, "t2").await.unwrap()); // in flight
    store.complete(k1, "prov-1").await.unwrap();
    answers.push(store.claim(k1, "t3").await.unwrap()); // done
    store.release(k1, "t3").await.unwrap(); // a delivered key stays delivered
    answers.push(store.claim(k1, "t1").await.unwrap());

    answers.push(store.claim(k2, "t4").await.unwrap()); // new
    store.release(k2, "t4").await.unwrap(); // a failed send frees its key
    answers.push(store.claim(k2, "t5").await.unwrap()); // new again
    // The claim's own token takes it over; any other finds it in flight and cannot free it.
    answers.push(store.claim(k2, "t5").await.unwrap()); // new: taken over
    answers.push(store.claim(k2, "t6").await.unwrap()); // in flight
    store.release(k2, "t6").await.unwrap();
    answers.push(store.claim(k2, "t7").await.unwrap()); // still in flight
    store.release(k2, "t5").await.unwrap();
    answers.push(store.claim(k2, "t8").await.unwrap()); // new

    answers.push(store.claim(other_user, "t9").await.unwrap());
    store.forget_user("acme", "ada").await.unwrap();
    answers.push(store.claim(k1, "t10").await.unwrap()); // forgotten: new
    answers.push(store.claim(other_user, "t11").await.unwrap()); // untouched: in flight
    answers
}

#[tokio::test]
async fn redis_and_memory_stores_answer_alike() {
    let server = redis_server::server();
    let redis = redis_server::key_store(&server).await;

    let from_redis = script(redis.as_ref()).await;
    let from_memory = script(&MemoryKeyStore::new()).await;
    assert_eq!(from_redis, from_memory);
    assert_eq!(
        from_redis,
        vec![
            Claim::New,
            Claim::InFlight,
            Claim::Done("prov-1".into()),
            Claim::Done("prov-1".into()),
            Claim::New,
            Claim::New,
            Claim::New,
            Claim::InFlight,
            Claim::InFlight,
            Claim::New,
            Claim::New,
            Claim::New,
            Claim::InFlight,
        ]
    );
}

#[tokio::test]
async fn keys_carry_the_partition_tag_and_expire() {
    let server = redis_server::server();
    let store = redis_server::key_store(&server).await;
    let key = SendKey::new("acme", "ada", "k-ttl");
    store.claim(key, "t-ttl").await.unwrap();
    store.complete(key, "prov-7").await.unwrap();

    let p = partition_of("acme", "ada", 64);
    let name = format!("bk:{{acme:{p}}}:sent:k-ttl");
    assert_eq!(store.key_name(key), name);
    let index = format!("bk:{{acme:{p}}}:sent-by:ada");
    assert_eq!(
        redis_server::all_keys(&server).await,
        vec![index.clone(), name.clone()]
    );

    let mut conn = redis_server::connect(&server).await;
    let value: String = redis::cmd("GET")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "d:prov-7");
    let day_ms = 24 * 3_600_000;
    for k in [&name, &index] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= day_ms, "{k}: {ttl}");
    }
}
