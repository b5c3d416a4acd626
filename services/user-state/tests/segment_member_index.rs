//! The segment member index: written with the user's record, listed page by page and counted
//! through the UserState gRPC API (a real tonic server on loopback), on Redis and on the
//! embedded store; forgetting a user leaves nothing of them in Redis.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use beckon_core::{Clock, Membership, MergeStage, Ts, UserState, VirtualClock};
use beckon_ingest::log::{EventLog, MemoryLog};
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{GetUserRequest, ListSegmentMembersRequest, SegmentSizesRequest};
use beckon_testkit::RedisServer;
use beckon_user_state::grpc::UserStateService;
use beckon_user_state::{MemoryStore, StateStore};
use support::{PARTITIONS, all_keys, busy_user, store};
use tonic::transport::Channel;

async fn serve(store: Arc<dyn StateStore>) -> UserStateClient<Channel> {
    // The embedded log: nothing reads it here; forgets only need somewhere to go.
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(0)));
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(clock.clone(), PARTITIONS, 1_000));
    support::serve(UserStateService::new(store, log, clock)).await
}

fn with_segments(mut state: UserState, segments: &[&str]) -> UserState {
    for s in segments {
        let m = Membership {
            member: true,
            since: Ts(1),
            due: None,
        };
        state.segments.insert((*s).to_string(), m);
    }
    state
}

/// Every member of the segment, following page tokens; also checks no page is too big.
async fn all_members(
    client: &mut UserStateClient<Channel>,
    segment: &str,
    page_size: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let page = client
            .list_segment_members(ListSegmentMembersRequest {
                workspace: "w".into(),
                segment: segment.into(),
                page_size,
                page_token: token.clone(),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.user_ids.len() <= page_size as usize, "{page:?}");
        out.extend(page.user_ids);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
    panic!("paging did not end");
}

async fn sizes(client: &mut UserStateClient<Channel>) -> Vec<(String, u64)> {
    let mut sizes: Vec<(String, u64)> = client
        .segment_sizes(SegmentSizesRequest {
            workspace: "w".into(),
        })
        .await
        .expect("sizes")
        .into_inner()
        .sizes
        .into_iter()
        .collect();
    sizes.sort();
    sizes
}

/// Writes 30 users, all in `vip` and every third also in `churn-risk`, then checks listing,
/// counting and a membership change.
async fn index_follows_writes(store: Arc<dyn StateStore>) {
    let mut client = serve(store.clone()).await;
    for i in 0..30 {
        let name = format!("user-{i:02}");
        let segments: &[&str] = if i % 3 == 0 {
            &["vip", "churn-risk"]
        } else {
            &["vip"]
        };
        store
            .save(&with_segments(busy_user(&name, 2), segments), 0)
            .await
            .expect("save");
    }

    let listed = all_members(&mut client, "vip", 7).await;
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(listed.len(), 30, "no user twice: {listed:?}");
    assert_eq!(unique.len(), 30);
    assert_eq!(all_members(&mut client, "churn-risk", 1000).await.len(), 10);
    assert!(all_members(&mut client, "nobody-here", 10).await.is_empty());
    assert_eq!(
        sizes(&mut client).await,
        [("churn-risk".to_string(), 10), ("vip".to_string(), 30)]
    );

    // Leaving a segment, in the same write as the rest of the record.
    let mut left = store
        .load("w", "user-00")
        .await
        .expect("load")
        .expect("user");
    let expected = left.version;
    left.version += 1;
    left.segments.remove("vip");
    store.save(&left, expected).await.expect("save");
    let listed = all_members(&mut client, "vip", 1000).await;
    assert!(!listed.contains(&"user-00".to_string()));
    assert_eq!(
        sizes(&mut client).await,
        [("churn-risk".to_string(), 10), ("vip".to_string(), 29)]
    );

    // Bad requests name the field and say what is wrong.
    let bad = |segment: &str, token: &str| ListSegmentMembersRequest {
        workspace: "w".into(),
        segment: segment.into(),
        page_size: 5,
        page_token: token.into(),
    };
    let e = client
        .list_segment_members(bad("vip", "garbage!"))
        .await
        .expect_err("bad token");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("page_token:"), "{}", e.message());
    let first = client
        .list_segment_members(bad("vip", ""))
        .await
        .expect("first page")
        .into_inner();
    let e = client
        .list_segment_members(bad("churn-risk", &first.next_page_token))
        .await
        .expect_err("token of another segment");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("issued for segment \"vip\""),
        "{}",
        e.message()
    );
    let e = client
        .list_segment_members(bad("", ""))
        .await
        .expect_err("no segment");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("segment:"), "{}", e.message());
}

#[tokio::test]
async fn members_and_sizes_on_redis() {
    let server = RedisServer::start().expect("redis");
    index_follows_writes(Arc::new(store(&server).await)).await;
}

#[tokio::test]
async fn members_and_sizes_on_the_embedded_store() {
    index_follows_writes(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn page_size_is_capped() {
    let store = Arc::new(MemoryStore::new());
    for i in 0..1_050 {
        let state = with_segments(UserState::new("w", &format!("u{i:04}")), &["all"]);
        store.save(&state, 0).await.expect("save");
    }
    let mut client = serve(store).await;
    let page = client
        .list_segment_members(ListSegmentMembersRequest {
            workspace: "w".into(),
            segment: "all".into(),
            page_size: 5_000,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.user_ids.len(), 1_000);
    assert!(!page.next_page_token.is_empty());
}

#[tokio::test]
async fn forget_leaves_no_key_or_index_entry_of_the_user_or_merged_ids() {
    let server = RedisServer::start().expect("redis");
    let store = Arc::new(store(&server).await);
    let mut client = serve(store.clone()).await;

    let (known, anon) = ("forget-known@example.com", "forget-anon-1");
    let mut state = with_segments(busy_user(known, 4), &["vip", "churn-risk"]);
    state.merged.insert(anon.into(), MergeStage::Done);
    store.save(&state, 0).await.expect("known");
    let mut tombstone = UserState::new("w", anon);
    tombstone.version = 3;
    tombstone.merged_into = Some(known.into());
    store.save(&tombstone, 0).await.expect("tombstone");
    store
        .save(&with_segments(busy_user("stays", 2), &["vip"]), 0)
        .await
        .expect("other");
    assert_eq!(all_members(&mut client, "vip", 10).await.len(), 2);

    let removed = client
        .forget_user(GetUserRequest {
            workspace: "w".into(),
            user_id: known.into(),
        })
        .await
        .expect("forget")
        .into_inner()
        .keys_removed;
    // Two index entries, the record, the tombstone.
    assert_eq!(removed, 4);

    let escaped = [
        beckon_scheduler::keys::escape(known),
        beckon_scheduler::keys::escape(anon),
    ];
    let keys = all_keys(&server);
    assert!(
        !keys
            .iter()
            .any(|k| escaped.iter().any(|e| k.contains(e.as_str()))),
        "{keys:?}"
    );
    // Nor inside any key: index sets, counters.
    let mut con = server.connection().expect("con");
    for key in &keys {
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut con).expect("type");
        let inside: Vec<String> = match kind.as_str() {
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .expect("zrange"),
            "hash" => redis::cmd("HKEYS").arg(key).query(&mut con).expect("hkeys"),
            "set" => redis::cmd("SMEMBERS")
                .arg(key)
                .query(&mut con)
                .expect("smembers"),
            _ => Vec::new(),
        };
        assert!(
            !inside.iter().any(|m| m == known || m == anon),
            "{key}: {inside:?}"
        );
    }
    assert_eq!(all_members(&mut client, "vip", 10).await, ["stays"]);
    assert_eq!(sizes(&mut client).await, [("vip".to_string(), 1)]);
    assert_eq!(PARTITIONS, store.partitions());
}

/// Definitions of workspace `w` with these segments.
fn defining(segments: &[&str]) -> beckon_journey::CurrentEngine {
    let text: Vec<String> = segments
        .iter()
        .map(|id| {
            format!(
                "kind: segment\nid: {id}\nversion: 1\nworkspace: w\ncondition:\n  \
                 did: {{event: Signed Up}}\n"
            )
        })
        .collect();
    let defs = beckon_journey::load_definitions_str("defs.yaml", &text.join("---\n"))
        .expect("definitions load");
    let engine = beckon_journey::Engine::from_definitions(defs.for_workspace("w"));
    beckon_journey::CurrentEngine::new(Arc::new(engine))
}

#[tokio::test]
async fn a_segment_nothing_defines_is_not_found_and_a_defined_empty_one_is_empty() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(0)));
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(clock.clone(), PARTITIONS, 1_000));
    let definitions = defining(&["vip", "churn-risk"]);
    let service =
        UserStateService::new(store.clone(), log, clock).with_definitions(definitions.clone());
    let mut client = support::serve(service).await;

    // A segment dropped from the definitions keeps listing who is still in it.
    let members = [("ada", &["vip", "retired"][..]), ("bob", &["retired"][..])];
    for (user, segments) in members {
        let state = with_segments(busy_user(user, 1), segments);
        store.save(&state, 0).await.expect("save");
    }
    assert_eq!(all_members(&mut client, "vip", 10).await, ["ada"]);
    assert!(all_members(&mut client, "churn-risk", 10).await.is_empty());
    assert_eq!(
        all_members(&mut client, "retired", 10).await,
        ["ada", "bob"]
    );

    let unknown = client
        .list_segment_members(ListSegmentMembersRequest {
            workspace: "w".into(),
            segment: "vipp".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect_err("not defined, nobody in it");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(
        unknown.message(),
        "segment: \"vipp\" is not defined in workspace \"w\""
    );

    // A segment published later is known from then on.
    definitions.replace(defining(&["vip", "churn-risk", "vipp"]).get().clone());
    assert!(all_members(&mut client, "vipp", 10).await.is_empty());
}
