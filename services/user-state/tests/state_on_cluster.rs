//! The state scripts run on a three-master Redis Cluster: every key of a user's partition
//! (record, aliases, timers, inbox, outbox, log) is in one slot.

mod support;

use std::collections::HashSet;

use beckon_core::{Effect, Timer, Ts};
use beckon_ingest::log::{Consumer, EventLog, LogConfig, RedisLog};
use beckon_testkit::RedisCluster;
use beckon_user_state::redis::{LogAck, RedisStateStore, members_key};
use beckon_user_state::store::MemberCursor;
use beckon_user_state::{StateError, StateStore};
use support::{PARTITIONS, busy_user, track};

#[tokio::test]
async fn cas_commit_and_forget_on_a_cluster() {
    let cluster = RedisCluster::start(3).expect("cluster");
    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("client");
    let con = client.get_async_connection().await.expect("connect");
    let store = RedisStateStore::new(con.clone(), "bk", PARTITIONS);
    let log = RedisLog::new(
        con,
        LogConfig {
            partitions: PARTITIONS,
            ..LogConfig::default()
        },
    );

    let mut slots_used = HashSet::new();
    let mut node = cluster.nodes()[0].connection().expect("node");
    for i in 0..16 {
        let name = format!("user-{i}");
        let state = busy_user(&name, 3);
        store.save(&state, 0).await.expect("create");
        assert!(matches!(
            store.save(&state, 0).await,
            Err(StateError::Conflict { .. })
        ));
        assert_eq!(
            store.load("w", &name).await.expect("load"),
            Some(state.clone())
        );

        let appended = log
            .append("w", &track(&name, &format!("m{i}")), None)
            .await
            .expect("append");
        let reader = Consumer::new("w", appended.partition, "user-state", "a");
        log.ensure_group(&reader).await.expect("group");
        let entries = log
            .read(&reader, 10, beckon_core::Duration(0))
            .await
            .expect("read");
        let mut next = state.clone();
        next.version += 1;
        // The member index is written by the same script, in the partition's slot.
        let member = beckon_core::Membership {
            member: true,
            since: Ts(1),
            due: None,
        };
        next.segments.insert("vip".into(), member);
        let timer = Timer {
            id: "t".into(),
            workspace: "w".into(),
            user: name.clone(),
            due: Ts(1),
            journey: "j".into(),
            instance: 1,
            trace: None,
        };
        let ack = LogAck {
            group: "user-state".into(),
            entry_ids: vec![entries[0].offset.clone()],
        };
        let effects = [Effect::SetTimer(timer)];
        store
            .commit(&next, state.version, &effects, Some(&ack), None)
            .await
            .expect("commit");
        let page = store
            .segment_members("w", "vip", MemberCursor::default(), 100)
            .await
            .expect("members");
        assert_eq!(page.users, std::slice::from_ref(&name));
        assert_eq!(store.sizes("w").await.expect("sizes").get("vip"), Some(&1));
        store
            .add_alias("w", &format!("anon-{i}"), &name)
            .await
            .expect("alias");
        assert_eq!(
            store
                .resolve_alias("w", &format!("anon-{i}"))
                .await
                .expect("alias"),
            Some(name.clone())
        );

        let keys = store.keys("w", &name);
        let names = [
            keys.state(&name),
            keys.user_aliases(&name),
            keys.user_timers(&name),
            keys.user_inbox(&name),
            keys.outbox(),
            keys.timers(),
            keys.log(),
            log.stream("w", appended.partition),
            members_key("bk", "w", appended.partition, "vip"),
        ];
        let slots: HashSet<i64> = names
            .iter()
            .map(|k| {
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(k)
                    .query(&mut node)
                    .expect("slot")
            })
            .collect();
        assert_eq!(slots.len(), 1, "{names:?}");
        slots_used.extend(slots);

        assert!(store.forget("w", &name).await.expect("forget") >= 3);
        assert!(store.sizes("w").await.expect("sizes").is_empty());
        assert_eq!(store.load("w", &name).await.expect("load"), None);
        assert_eq!(
            store
                .resolve_alias("w", &format!("anon-{i}"))
                .await
                .expect("alias"),
            None
        );
    }
    assert!(slots_used.len() > 1);
}
