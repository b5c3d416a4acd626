//! `SubscribeInbox` over a real tonic server: a message sent while the app is connected
//! arrives on the stream at once, pushed by the insert rather than found by polling, and the
//! stream ends cleanly when the app goes away or the service drains.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::Duration;
use beckon_gateway::Gateway;
use beckon_gateway::grpc::GatewayService;
use beckon_gateway::inbox::Inbox;
use beckon_proto::v1::{ListInboxRequest, OutboundMessage, SendRequest};
use support::test_deps;
use tokio::sync::oneshot;

fn send_request(key: &str, user: &str) -> SendRequest {
    SendRequest {
        workspace: "acme".into(),
        message: Some(OutboundMessage {
            idempotency_key: key.into(),
            user_id: user.into(),
            channel: "in_app".into(),
            journey: "onboarding".into(),
            step: "welcome".into(),
            title: "Welcome".into(),
            body: "<p>Hello Ada</p>".into(),
            ..Default::default()
        }),
    }
}

fn subscription(user: &str) -> ListInboxRequest {
    ListInboxRequest {
        workspace: "acme".into(),
        user_id: user.into(),
    }
}

/// Waits, without a deadline of its own, until the server has let go of every subscription.
async fn until_no_subscribers(inbox: &Inbox) {
    while inbox.subscribers() > 0 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_connected_app_receives_a_sent_message_at_once() {
    let t = test_deps();
    let inbox = Arc::new(Inbox::new(t.deps.clock.clone(), Duration::hours(24), 50));
    let gateway = Gateway::new().with("in_app", inbox.clone());
    let addr = support::grpc::serve(GatewayService::new(gateway, inbox.clone())).await;
    let mut app = support::grpc::client(addr).await;
    let mut backend = support::grpc::client(addr).await;

    let mut stream = app
        .subscribe_inbox(subscription("ada"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inbox.subscribers(), 1);

    // The reader notes when the item arrives; the figure below is printed, never asserted.
    let (arrived_tx, arrived) = oneshot::channel();
    let reader = tokio::spawn(async move {
        let item = stream.message().await;
        #[allow(clippy::disallowed_methods)]
        let at = std::time::Instant::now();
        let _ = arrived_tx.send((item, at));
        stream
    });

    // Someone else's message is not delivered to Ada.
    backend.send(send_request("k-other", "bob")).await.unwrap();
    let answer = backend
        .send(send_request("k-welcome", "ada"))
        .await
        .unwrap()
        .into_inner();
    #[allow(clippy::disallowed_methods)]
    let returned = std::time::Instant::now();
    assert_eq!(answer.outcome, "sent");

    let (item, at) = arrived.await.unwrap();
    let item = item.unwrap().expect("an item, not the end of the stream");
    assert_eq!(item.id, "k-welcome");
    assert_eq!(item.title, "Welcome");
    assert_eq!(item.body, "<p>Hello Ada</p>");
    assert!(!item.read);
    let delay_us = match at.checked_duration_since(returned) {
        Some(after) => after.as_micros() as i128,
        None => -(returned.duration_since(at).as_micros() as i128),
    };
    eprintln!("inbox push: stream item {delay_us} µs after Send returned (negative: before)");

    // The app goes away: the server drops its side of the subscription.
    let stream = reader.await.unwrap();
    drop(stream);
    drop(app);
    until_no_subscribers(&inbox).await;
    assert_eq!(inbox.subscribers(), 0);
}

#[tokio::test]
async fn draining_the_service_ends_open_streams_cleanly() {
    let t = test_deps();
    let inbox = Arc::new(Inbox::new(t.deps.clock.clone(), Duration::hours(24), 50));
    let gateway = Gateway::new().with("in_app", inbox.clone());
    let service = GatewayService::new(gateway, inbox.clone());
    let drain = service.drain_handle();
    let addr = support::grpc::serve(service).await;
    let mut app = support::grpc::client(addr).await;

    let mut stream = app
        .subscribe_inbox(subscription("ada"))
        .await
        .unwrap()
        .into_inner();
    drain.drain();

    // The end of the stream, with an OK status rather than an error.
    assert!(stream.message().await.unwrap().is_none());
    until_no_subscribers(&inbox).await;
}

#[tokio::test]
async fn a_subscription_with_a_bad_user_is_refused() {
    let t = test_deps();
    let inbox = Arc::new(Inbox::new(t.deps.clock.clone(), Duration::hours(24), 50));
    let addr = support::grpc::serve(GatewayService::new(Gateway::new(), inbox)).await;
    let mut app = support::grpc::client(addr).await;

    let status = app.subscribe_inbox(subscription("")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "invalid user_id: must not be empty");
}
