//! `beckon serve all` on the embedded store, as a real process over gRPC: events in through
//! Ingest, a timer through the scheduler, a message out through the gateway.

mod support;

use beckon_proto::v1::GetUserRequest;
use beckon_proto::v1::TrackRequest;
use beckon_proto::v1::ingest_client::IngestClient;
use beckon_proto::v1::user_state_client::UserStateClient;
use serde_json::json;
use support::{Served, eventually, examples, recorded, track, wall_clock_ms};

#[tokio::test]
async fn cart_reminder_flows_through_the_running_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("messages.jsonl");
    let journeys = examples();
    let mut served = Served::start(
        "all",
        &[
            "--journeys",
            journeys.to_str().unwrap_or_default(),
            "--messages-out",
            out.to_str().unwrap_or_default(),
            "--partitions",
            "8",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    let mut ingest = IngestClient::connect(served.url()).await.expect("connect");

    // The services run on the system clock: an add two hours ago has a reminder due an hour
    // ago, which fires as soon as it is set.
    let past = wall_clock_ms() - 2 * 3_600_000;
    let lamp = || {
        track(
            "shopper",
            "Product Added",
            "m1",
            past,
            json!({"name": "Lamp"}),
        )
    };
    assert!(send(&mut ingest, lamp()).await.appended);

    // A repeated message id is acknowledged without a second append.
    assert!(!send(&mut ingest, lamp()).await.appended);

    // An order right after the add cancels that user's reminder. This add is recent, so its
    // reminder is not due yet: one due already could fire between the two appends.
    let recent = wall_clock_ms() - 30 * 60_000;
    send(
        &mut ingest,
        track(
            "buyer",
            "Product Added",
            "b1",
            recent,
            json!({"name": "Desk"}),
        ),
    )
    .await;
    send(
        &mut ingest,
        track("buyer", "Order Completed", "b2", recent + 60_000, json!({})),
    )
    .await;

    let cart = |m: &serde_json::Value| m["journey"] == "cart-abandonment";
    assert!(
        eventually(200, || recorded(&out)
            .iter()
            .any(|m| cart(m) && m["user_id"] == "shopper"))
        .await,
        "the cart push went out: {:?}",
        recorded(&out)
    );
    let pushes: Vec<_> = recorded(&out).into_iter().filter(|m| cart(m)).collect();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0]["body"], "You left Lamp in your cart");

    // Bad input is refused with the field named, and nothing else is lost.
    let mut bad = track("", "Product Added", "m9", past, json!({}));
    bad.anonymous_id = String::new();
    let err = ingest
        .track(TrackRequest {
            workspace: "default".into(),
            event: Some(bad),
        })
        .await
        .expect_err("rejected");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("event.userId"), "{}", err.message());

    // The user's state, its explanation, and forgetting it, through the UserState API.
    let mut users = UserStateClient::connect(served.url())
        .await
        .expect("connect");
    let who = || GetUserRequest {
        workspace: "default".into(),
        user_id: "shopper".into(),
    };
    let view = users.get_user(who()).await.expect("get user").into_inner();
    assert!(
        view.state_json.contains("Product Added"),
        "{}",
        view.state_json
    );
    let why = users.explain(who()).await.expect("explain").into_inner();
    let kinds: Vec<_> = why
        .decisions
        .iter()
        .filter(|d| d.journey == "cart-abandonment")
        .map(|d| d.kind.as_str())
        .collect();
    assert!(
        kinds.contains(&"entered") && kinds.contains(&"sent"),
        "{kinds:?}"
    );

    // The buyer's order ended the journey, so no reminder is left to fire.
    let buyer = users
        .explain(GetUserRequest {
            workspace: "default".into(),
            user_id: "buyer".into(),
        })
        .await
        .expect("explain buyer")
        .into_inner();
    let kinds: Vec<_> = buyer
        .decisions
        .iter()
        .filter(|d| d.journey == "cart-abandonment")
        .map(|d| d.kind.as_str())
        .collect();
    assert!(
        kinds.contains(&"entered")
            && (kinds.contains(&"exited") || kinds.contains(&"exited_on_goal")),
        "{kinds:?}"
    );

    let forgotten = users.forget_user(who()).await.expect("forget").into_inner();
    assert!(forgotten.keys_removed >= 1);
    let gone = users.get_user(who()).await.expect_err("forgotten");
    assert_eq!(gone.code(), tonic::Code::NotFound);

    // Every RPC above is counted, by method, on the Prometheus endpoint.
    let admin = served.admin.clone().expect("admin address");
    let metrics = support::http_get(&admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("rpc_method=\"Track\""), "{metrics}");
    assert!(
        metrics.contains("rpc_service=\"beckon.v1.UserState\""),
        "{metrics}"
    );

    drop(users);
    drop(ingest);
    let status = served.terminate();
    assert!(
        status.success(),
        "drains and exits cleanly on SIGTERM: {status:?}"
    );
}

async fn send(
    ingest: &mut IngestClient<tonic::transport::Channel>,
    event: beckon_proto::v1::Event,
) -> beckon_proto::v1::Ack {
    let request = TrackRequest {
        workspace: "default".into(),
        event: Some(event),
    };
    ingest.track(request).await.expect("track").into_inner()
}
