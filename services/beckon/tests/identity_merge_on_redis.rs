//! Identity merge through `beckon serve all` on a Redis of the test's own (and once on the
//! embedded store): events in over gRPC, the merge steps through the partition logs, state
//! read back through the UserState API and the `beckon user` command.

mod support;

use beckon_core::partition::partition_of;
use beckon_proto::convert::{json_to_struct, millis_to_timestamp};
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use beckon_proto::v1::{BatchRequest, Event, GetUserRequest, UserView, batch_result};
use beckon_testkit::RedisServer;
use serde_json::{Value, json};
use support::{Served, eventually_async, wall_clock_ms};
use tonic::transport::Channel;

const PARTITIONS: u32 = 8;

const DEFS: &str = "
id: onboarding
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    delay: 2d
  - id: nudge
    message:
      channel: push
      body: Still there?
---
kind: segment
id: pricing-curious
version: 1
workspace: default
condition:
  did: {event: Pricing, within: 7d, at_least: 3}
";

/// Fields drop in order: the service stops before its Redis does.
struct Setup {
    served: Served,
    ingest: IngestClient<Channel>,
    users: UserStateClient<Channel>,
    _dir: tempfile::TempDir,
    redis: Option<RedisServer>,
}

async fn setup() -> Setup {
    let redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();
    let mut s = setup_with(&["--redis-url", &url]).await;
    s.redis = Some(redis);
    s
}

/// `serve all` with extra arguments (none: the embedded store and log).
async fn setup_with(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("merge.yaml"), DEFS).expect("write definitions");
    let out = dir.path().join("sent.jsonl");
    let partitions = PARTITIONS.to_string();
    let mut args = vec![
        "--journeys",
        dir.path().to_str().unwrap_or_default(),
        "--messages-out",
        out.to_str().unwrap_or_default(),
        "--partitions",
        &partitions,
    ];
    args.extend_from_slice(extra);
    let served = Served::start("all", &args);
    let ingest = IngestClient::connect(served.url()).await.expect("ingest");
    let users = UserStateClient::connect(served.url()).await.expect("users");
    Setup {
        served,
        ingest,
        users,
        _dir: dir,
        redis: None,
    }
}

fn event(kind: &str, user: &str, anonymous: &str, name: &str, id: &str, at_ms: i64) -> Event {
    Event {
        r#type: kind.into(),
        message_id: id.into(),
        user_id: user.into(),
        anonymous_id: anonymous.into(),
        event: name.into(),
        timestamp: Some(millis_to_timestamp(at_ms)),
        ..Event::default()
    }
}

fn with_traits(mut e: Event, traits: Value) -> Event {
    e.traits = traits.as_object().map(json_to_struct);
    e
}

async fn send(s: &mut Setup, events: Vec<Event>) {
    let answer = s
        .ingest
        .batch(BatchRequest {
            workspace: "default".into(),
            events,
        })
        .await
        .expect("batch")
        .into_inner();
    for r in answer.results {
        assert!(
            matches!(r.outcome, Some(batch_result::Outcome::Ack(_))),
            "{r:?}"
        );
    }
}

async fn view(users: &mut UserStateClient<Channel>, user: &str) -> Option<UserView> {
    users
        .get_user(GetUserRequest {
            workspace: "default".into(),
            user_id: user.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// The stored record of the id; null while there is none.
async fn exported(users: &mut UserStateClient<Channel>, user: &str) -> Value {
    let request = GetUserRequest {
        workspace: "default".into(),
        user_id: user.into(),
    };
    match users.export_user(request).await {
        Ok(r) => serde_json::from_str(&r.into_inner().json).expect("export is JSON"),
        Err(e) if e.code() == tonic::Code::NotFound => Value::Null,
        Err(e) => panic!("export failed: {e}"),
    }
}

fn views_of(v: &UserView) -> u64 {
    let state: Value = serde_json::from_str(&v.state_json).unwrap_or_default();
    state["events"]["Pricing"]["count"].as_u64().unwrap_or(0)
}

fn on_other_partitions(a: &str, b: &str) {
    assert_ne!(
        partition_of("default", a, PARTITIONS),
        partition_of("default", b, PARTITIONS),
        "the test wants the two ids on different partitions"
    );
}

#[tokio::test]
async fn the_merged_user_counts_three_views_and_stays_in_the_journey() {
    let mut s = setup().await;
    let (anon, known) = ("anon-7f3", "user-42");
    on_other_partitions(anon, known);
    let t = wall_clock_ms() - 60 * 60_000;

    send(
        &mut s,
        vec![
            event("page", "", anon, "Pricing", "a1", t),
            event("page", "", anon, "Pricing", "a2", t + 60_000),
            event("track", known, "", "Signed Up", "k1", t + 120_000),
            event("page", known, "", "Pricing", "k2", t + 180_000),
        ],
    )
    .await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || {
            view(users, known).await.is_some_and(|v| views_of(&v) == 1)
                && view(users, anon).await.is_some_and(|v| views_of(&v) == 2)
        })
        .await,
        "both ids are known before the merge"
    );
    let before = view(users, known).await.expect("known");
    assert_eq!(before.journeys[0].journey, "onboarding");
    assert!(before.segments.is_empty());

    let identify = event("identify", known, anon, "", "k3", t + 240_000);
    send(&mut s, vec![identify.clone()]).await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || {
            view(users, known).await.is_some_and(|v| views_of(&v) == 3)
        })
        .await,
        "the merged user counts three views: {:?}",
        view(users, known).await
    );
    let merged = view(users, known).await.expect("known");
    let journeys: Vec<&str> = merged.journeys.iter().map(|j| j.journey.as_str()).collect();
    assert_eq!(journeys, ["onboarding"], "still in the running journey");
    assert_eq!(merged.journeys[0].entered_at, before.journeys[0].entered_at);
    assert_eq!(merged.segments, ["pricing-curious"]);

    // The old id's record is a tombstone now: no history of its own.
    let tombstone = exported(users, anon).await;
    assert_eq!(tombstone["merged_into"], known, "{tombstone}");
    assert_eq!(tombstone["total_events"], 0);

    // The same identify again, and a new one naming the same pair, change nothing.
    send(&mut s, vec![identify]).await;
    let again = event("identify", known, anon, "", "k4", t + 300_000);
    send(&mut s, vec![again]).await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || {
            exported(users, known).await["message_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i == "k4"))
        })
        .await
    );
    let after = view(users, known).await.expect("known");
    assert_eq!(views_of(&after), 3);
    let decisions = users
        .explain(GetUserRequest {
            workspace: "default".into(),
            user_id: known.into(),
        })
        .await
        .expect("explain")
        .into_inner()
        .decisions;
    let merges = decisions.iter().filter(|d| d.kind == "merged").count();
    assert_eq!(merges, 1, "{decisions:?}");
    let entered = decisions
        .iter()
        .filter(|d| d.kind == "segment_entered" && d.journey == "pricing-curious")
        .count();
    assert_eq!(entered, 1, "the segment entry fired for the merged user");

    let status = s.served.terminate();
    assert!(status.success(), "{status:?}");
}

/// The embedded store and log take the same steps.
#[tokio::test]
async fn serve_all_embedded_merges_the_same_way() {
    let mut s = setup_with(&[]).await;
    let (anon, known) = ("anon-7f3", "user-42");
    let t = wall_clock_ms() - 60 * 60_000;
    send(
        &mut s,
        vec![
            event("page", "", anon, "Pricing", "a1", t),
            event("page", "", anon, "Pricing", "a2", t + 60_000),
            event("track", known, "", "Signed Up", "k1", t + 120_000),
            event("page", known, "", "Pricing", "k2", t + 180_000),
        ],
    )
    .await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || {
            view(users, anon).await.is_some_and(|v| views_of(&v) == 2)
                && view(users, known)
                    .await
                    .is_some_and(|v| !v.journeys.is_empty())
        })
        .await
    );
    send(
        &mut s,
        vec![event("identify", known, anon, "", "k3", t + 240_000)],
    )
    .await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || {
            view(users, known).await.is_some_and(|v| views_of(&v) == 3)
        })
        .await
    );
    let merged = view(users, known).await.expect("known");
    assert_eq!(merged.journeys[0].journey, "onboarding");
    assert_eq!(merged.segments, ["pricing-curious"]);
}

#[tokio::test]
async fn later_events_for_the_old_id_are_forwarded_to_the_known_user() {
    let mut s = setup().await;
    let (anon, known) = ("anon-b1", "user-b");
    on_other_partitions(anon, known);
    let t = wall_clock_ms() - 60 * 60_000;

    send(&mut s, vec![event("page", "", anon, "Pricing", "b1", t)]).await;
    // An alias names the old id in previousId.
    let mut alias = event("alias", known, "", "", "b3", t + 60_000);
    alias.previous_id = anon.into();
    send(&mut s, vec![alias]).await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || {
            view(users, known).await.is_some_and(|v| views_of(&v) == 1)
        })
        .await
    );

    // Events for the old id alone, after the merge, reach the known user through the
    // tombstone; a repeated one still applies once.
    send(
        &mut s,
        vec![
            event("page", "", anon, "Pricing", "b4", t + 120_000),
            event("page", "", anon, "Pricing", "b4", t + 120_000),
            event("page", "", anon, "Pricing", "b5", t + 180_000),
        ],
    )
    .await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || {
            view(users, known).await.is_some_and(|v| views_of(&v) == 3)
        })
        .await,
        "{:?}",
        view(users, known).await
    );
    let tombstone = exported(users, anon).await;
    assert_eq!(tombstone["total_events"], 0, "{tombstone}");

    // Reading the old id reads the user it was merged into.
    let through = view(users, anon).await.expect("view through the tombstone");
    assert_eq!(through.user_id, known);
}

#[tokio::test]
async fn consent_after_a_merge_is_the_stricter_answer() {
    let mut s = setup().await;
    let (anon, known) = ("anon-c9", "user-c");
    on_other_partitions(anon, known);
    let t = wall_clock_ms() - 60 * 60_000;

    let old = with_traits(
        event("identify", "", anon, "", "c1", t),
        json!({"email_opt_out": true, "consent": {"push": false}, "devices": {"ios": ["aaa"]}}),
    );
    send(&mut s, vec![old]).await;
    let users = &mut s.users;
    assert!(eventually_async(200, async || view(users, anon).await.is_some()).await);

    let newer = with_traits(
        event("identify", known, anon, "", "c2", t + 60_000),
        json!({
            "email_opt_out": false,
            "consent": {"push": true, "sms": true},
            "devices": {"ios": ["ccc"], "fcm": ["bbb"]},
            "plan": "pro",
        }),
    );
    send(&mut s, vec![newer]).await;
    let users = &mut s.users;
    assert!(
        eventually_async(200, async || {
            exported(users, known).await["merged"][anon] == "done"
        })
        .await
    );
    let traits = exported(users, known).await["traits"].clone();
    assert_eq!(traits["email_opt_out"]["value"], true, "{traits}");
    assert_eq!(
        traits["consent"]["value"],
        json!({"push": false, "sms": true})
    );
    assert_eq!(
        traits["devices"]["value"],
        json!({"ios": ["ccc", "aaa"], "fcm": ["bbb"]})
    );
    assert_eq!(traits["plan"]["value"], "pro");
}

/// Runs `beckon user ARGS --url URL` and returns what it printed.
fn cli(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_beckon"))
        .arg("user")
        .args(args)
        .args(["--url", url])
        .output()
        .expect("run beckon user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test]
async fn segment_members_follow_the_merge_and_forgetting_leaves_nothing() {
    let mut s = setup().await;
    let (anon, known) = ("anon-7f3", "user-42");
    let t = wall_clock_ms() - 60 * 60_000;
    let mut views: Vec<Event> = (0..3)
        .map(|i| event("page", "", anon, "Pricing", &format!("v{i}"), t + i * 1_000))
        .collect();
    views.push(event("track", known, "", "Signed Up", "k1", t + 5_000));
    send(&mut s, views).await;
    let url = s.served.url();
    assert!(
        eventually_async(200, async || cli(&url, &["members", "pricing-curious"])
            == format!("{anon}\n"))
        .await,
        "the anonymous id is a member before the merge"
    );

    send(
        &mut s,
        vec![event("identify", known, anon, "", "k2", t + 6_000)],
    )
    .await;
    assert!(
        eventually_async(200, async || cli(&url, &["members", "pricing-curious"])
            == format!("{known}\n"))
        .await,
        "the merge moved the membership: {}",
        cli(&url, &["members", "pricing-curious"])
    );
    assert_eq!(cli(&url, &["sizes"]), "pricing-curious\t1\n");

    let forgotten = cli(&url, &["forget", known]);
    assert!(forgotten.starts_with("forgotten:"), "{forgotten}");
    assert_eq!(cli(&url, &["sizes"]), "");

    // Nothing of either id is left in Redis: no key names them, no set, hash or sorted set
    // holds them.
    assert_nothing_names(&s, &[anon, known]);
    let gone = s
        .users
        .get_user(GetUserRequest {
            workspace: "default".into(),
            user_id: anon.into(),
        })
        .await
        .expect_err("the tombstone went with the user");
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

/// No Redis key names any of `ids`, and no set, hash or sorted set holds them.
fn assert_nothing_names(s: &Setup, ids: &[&str]) {
    let mut con = s
        .redis
        .as_ref()
        .expect("on Redis")
        .connection()
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).expect("keys");
    for key in &keys {
        assert!(!ids.iter().any(|id| key.contains(id)), "{key}");
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut con).expect("type");
        let inside: Vec<String> = match kind.as_str() {
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .expect("zrange"),
            "set" => redis::cmd("SMEMBERS")
                .arg(key)
                .query(&mut con)
                .expect("set"),
            "hash" => redis::cmd("HKEYS").arg(key).query(&mut con).expect("hash"),
            _ => Vec::new(),
        };
        assert!(
            !inside.iter().any(|m| ids.iter().any(|id| m.contains(id))),
            "{key}: {inside:?}"
        );
    }
}

/// Merges chain: `first` into `middle`, then `middle` (with what it took over) into `last`.
/// The first id's tombstone keeps pointing at the middle one.
async fn merge_chain(s: &mut Setup, first: &str, middle: &str, last: &str, t: i64, tag: &str) {
    send(
        s,
        vec![event("track", first, "", "Pricing", &format!("{tag}1"), t)],
    )
    .await;
    send(
        s,
        vec![event(
            "identify",
            middle,
            first,
            "",
            &format!("{tag}2"),
            t + 1_000,
        )],
    )
    .await;
    assert!(
        eventually_async(200, async || view(&mut s.users, first)
            .await
            .is_some_and(|v| v.user_id == middle))
        .await,
        "{first} merged into {middle}"
    );
    send(
        s,
        vec![event(
            "identify",
            last,
            middle,
            "",
            &format!("{tag}3"),
            t + 2_000,
        )],
    )
    .await;
    assert!(
        eventually_async(200, async || view(&mut s.users, middle)
            .await
            .is_some_and(|v| v.user_id == last))
        .await,
        "{middle} merged into {last}"
    );
    assert_eq!(exported(&mut s.users, first).await["merged_into"], middle);
}

#[tokio::test]
async fn forgetting_any_id_of_a_merge_chain_erases_every_id_of_it() {
    let mut s = setup().await;
    let url = s.served.url();
    let t = wall_clock_ms() - 60 * 60_000;

    // Forgetting the user everything was merged into also erases the first id, whose
    // tombstone points at the middle one, not at the user.
    let chain = ["chain-a1", "chain-b1", "chain-e1"];
    merge_chain(&mut s, chain[0], chain[1], chain[2], t, "c1-").await;
    let forgotten = cli(&url, &["forget", chain[2]]);
    assert!(forgotten.starts_with("forgotten:"), "{forgotten}");

    // Forgetting an id in the middle forgets the person it belongs to, as reading it reads
    // them: the ids on either side go too, and nothing names the middle one.
    let other = ["chain-a2", "chain-b2", "chain-e2"];
    merge_chain(&mut s, other[0], other[1], other[2], t, "c2-").await;
    let forgotten = cli(&url, &["forget", other[1]]);
    assert!(forgotten.starts_with("forgotten:"), "{forgotten}");

    for id in chain.iter().chain(&other) {
        assert_eq!(
            exported(&mut s.users, id).await,
            Value::Null,
            "{id} is gone"
        );
    }
    assert_nothing_names(&s, &[chain.as_slice(), other.as_slice()].concat());
}
