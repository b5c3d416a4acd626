//! The inbox RPCs over a real tonic server: list, mark read, dismiss.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::{Duration, Ts};
use beckon_gateway::Gateway;
use beckon_gateway::grpc::GatewayService;
use beckon_gateway::inbox::Inbox;
use beckon_proto::convert::timestamp_to_millis;
use beckon_proto::v1::{InboxItemRequest, ListInboxRequest, OutboundMessage, SendRequest};
use support::{START, test_deps};

#[tokio::test]
async fn messages_are_listed_marked_read_and_dismissed() {
    let t = test_deps();
    let inbox = Arc::new(Inbox::new(t.deps.clock.clone(), Duration::hours(24), 50));
    let gateway = Gateway::new().with("in_app", inbox.clone());
    let addr = support::grpc::serve(GatewayService::new(gateway, inbox)).await;
    let mut client = support::grpc::client(addr).await;

    for (i, key) in ["k-1", "k-2"].into_iter().enumerate() {
        t.clock.advance_to(Ts(START.0 + i as i64 * 1_000));
        let message = OutboundMessage {
            idempotency_key: key.into(),
            user_id: "ada".into(),
            channel: "in_app".into(),
            journey: "onboarding".into(),
            step: format!("step-{i}"),
            body: format!("Message {i}"),
            ..Default::default()
        };
        let request = SendRequest {
            workspace: "acme".into(),
            message: Some(message),
        };
        client.send(request).await.unwrap();
    }

    let who = ListInboxRequest {
        workspace: "acme".into(),
        user_id: "ada".into(),
    };
    let item = |id: &str| InboxItemRequest {
        workspace: "acme".into(),
        user_id: "ada".into(),
        id: id.into(),
    };

    let listed = client.list_inbox(who.clone()).await.unwrap().into_inner();
    let ids: Vec<&str> = listed.items.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["k-2", "k-1"], "newest first");
    assert_eq!(listed.messages.len(), 2);
    assert_eq!(listed.messages[0].channel, "in_app");
    assert_eq!(listed.messages[0].body, "Message 1");
    let created = timestamp_to_millis(listed.items[0].created.as_ref().unwrap());
    assert_eq!(created, START.0 + 1_000);

    assert!(
        client
            .mark_inbox_read(item("k-1"))
            .await
            .unwrap()
            .into_inner()
            .found
    );
    assert!(
        !client
            .mark_inbox_read(item("k-9"))
            .await
            .unwrap()
            .into_inner()
            .found
    );
    assert!(
        client
            .dismiss_inbox_message(item("k-2"))
            .await
            .unwrap()
            .into_inner()
            .found
    );
    assert!(
        !client
            .dismiss_inbox_message(item("k-2"))
            .await
            .unwrap()
            .into_inner()
            .found
    );

    let listed = client.list_inbox(who).await.unwrap().into_inner();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, "k-1");
    assert!(listed.items[0].read);

    let status = client.mark_inbox_read(item("")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "invalid id: must not be empty");
}
