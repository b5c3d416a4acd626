//! `Send` over a real tonic server and client: sent, duplicate, and refusals that name the
//! field at fault or map the gateway's error to its status code.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use beckon_core::Duration;
use beckon_gateway::grpc::GatewayService;
use beckon_gateway::inbox::Inbox;
use beckon_gateway::{Gateway, RecordingChannel};
use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::{OutboundMessage, SendRequest};
use support::test_deps;
use tonic::Code;

fn request(channel: &str, key: &str) -> SendRequest {
    SendRequest {
        workspace: "acme".into(),
        message: Some(OutboundMessage {
            idempotency_key: key.into(),
            user_id: "u1".into(),
            channel: channel.into(),
            journey: "cart-reminder".into(),
            step: "nudge".into(),
            title: "Still thinking it over?".into(),
            body: "Your cart is waiting.".into(),
            version: 3,
            ..Default::default()
        }),
    }
}

async fn start() -> (
    beckon_proto::v1::gateway_client::GatewayClient<tonic::transport::Channel>,
    RecordingChannel,
) {
    let t = test_deps();
    let inbox = Arc::new(Inbox::new(t.deps.clock.clone(), Duration::hours(24), 50));
    let recorder = RecordingChannel::new();
    let gateway = Gateway::new()
        .with("push", Arc::new(recorder.clone()))
        .with("in_app", inbox.clone());
    let addr = support::grpc::serve(GatewayService::new(gateway, inbox)).await;
    (support::grpc::client(addr).await, recorder)
}

#[tokio::test]
async fn a_send_is_delivered_once_and_a_repeat_answers_duplicate() {
    let (mut client, recorder) = start().await;

    let first = client
        .send(request("push", "k-grpc-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.outcome, "sent");
    assert_eq!(first.provider_id, "rec-1");

    let again = client
        .send(request("push", "k-grpc-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.outcome, "duplicate");
    assert_eq!(again.provider_id, first.provider_id);

    let sent = recorder.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].workspace, "acme");
    assert_eq!(sent[0].title.as_deref(), Some("Still thinking it over?"));
    assert_eq!(sent[0].version, 3);
    // Without `at`, the send is dated by the service's clock.
    assert_eq!(sent[0].at, support::START);
}

#[tokio::test]
async fn a_bad_field_is_refused_by_name_and_nothing_is_sent() {
    let (mut client, recorder) = start().await;

    let mut no_user = request("push", "k-bad-1");
    no_user.message.as_mut().unwrap().user_id.clear();
    let status = client.send(no_user).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid message.user_id: must not be empty"
    );

    let mut bad_workspace = request("push", "k-bad-2");
    bad_workspace.workspace = "acme corp".into();
    let status = client.send(bad_workspace).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("invalid workspace:"),
        "{status:?}"
    );

    let mut no_message = request("push", "k-bad-3");
    no_message.message = None;
    let status = client.send(no_message).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "invalid message: is required");

    assert!(recorder.messages().is_empty());
}

#[tokio::test]
async fn a_known_channel_without_a_provider_is_a_failed_precondition() {
    let (mut client, _) = start().await;

    let status = client.send(request("sms", "k-sms-1")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "no provider is configured for channel sms in this gateway"
    );
}

#[tokio::test]
async fn an_unknown_channel_is_an_invalid_argument_naming_the_field() {
    let (mut client, recorder) = start().await;

    let status = client
        .send(request("pigeon", "k-pigeon-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid message.channel: unknown channel `pigeon`; known channels: push, in_app, \
         email, sms, webhook, live_activity"
    );
    assert!(recorder.messages().is_empty());
}

#[tokio::test]
async fn a_time_outside_the_calendar_is_refused_not_replaced() {
    let (mut client, recorder) = start().await;

    for at in [i64::MAX / 2, i64::MIN / 2] {
        let mut late = request("push", "k-at-1");
        late.message.as_mut().unwrap().at = Some(millis_to_timestamp(at));
        let status = client.send(late).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("invalid message.at: seconds"),
            "{status:?}"
        );
        assert!(status.message().contains("out of range"), "{status:?}");
    }
    assert!(recorder.messages().is_empty(), "nothing was sent");

    // A time in the calendar is kept as given.
    let mut dated = request("push", "k-at-2");
    dated.message.as_mut().unwrap().at = Some(millis_to_timestamp(support::START.0 - 5_000));
    client.send(dated).await.unwrap();
    assert_eq!(recorder.messages()[0].at.0, support::START.0 - 5_000);
}

#[tokio::test]
async fn a_message_brings_its_addresses_within_bounds() {
    let (mut client, recorder) = start().await;

    let mut with_tokens = request("push", "k-to-1");
    with_tokens.message.as_mut().unwrap().to = Some(beckon_proto::v1::Contacts {
        email: None,
        phone: Some(String::new()),
        devices: vec![beckon_proto::v1::DeviceTokens {
            platform: "ios".into(),
            tokens: vec!["aa".into(), "bb".into()],
        }],
    });
    client.send(with_tokens).await.unwrap();
    let sent = recorder.messages();
    let to = sent[0].to.as_ref().expect("carried");
    assert_eq!(
        to.tokens("ios"),
        Some(&["aa".to_string(), "bb".to_string()][..])
    );
    assert_eq!(to.phone, None, "an empty number is no number");

    let mut long = request("push", "k-to-2");
    long.message.as_mut().unwrap().to = Some(beckon_proto::v1::Contacts {
        email: Some("a".repeat(5_000)),
        ..Default::default()
    });
    let status = client.send(long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid message.to.email: 5000 bytes; at most 4096"
    );

    let mut many = request("push", "k-to-3");
    many.message.as_mut().unwrap().to = Some(beckon_proto::v1::Contacts {
        devices: vec![beckon_proto::v1::DeviceTokens {
            platform: "fcm".into(),
            tokens: (0..101).map(|n| format!("t{n}")).collect(),
        }],
        ..Default::default()
    });
    let status = client.send(many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("invalid message.to.devices: 101 tokens"),
        "{status:?}"
    );
    assert_eq!(recorder.messages().len(), 1);
}
