//! A gateway or scheduler that cannot be reached is named as such in the error the partition
//! loop logs, not taken for a state store outage.

use beckon_core::{OutboundMessage, Timer, Ts};
use beckon_user_state::StateError;
use beckon_user_state::outlet::{Outlet, TimerSink};
use beckon_user_state::remote::{RemoteGateway, RemoteScheduler};

/// A channel to a local port nothing listens on: every call fails to connect.
fn nobody_listening() -> tonic::transport::Channel {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy()
}

#[tokio::test]
async fn an_unreachable_gateway_is_named_as_the_gateway() {
    let outlet = RemoteGateway::new(nobody_listening());
    let message = OutboundMessage {
        idempotency_key: "k-1".into(),
        workspace: "default".into(),
        user_id: "ada".into(),
        journey: "onboarding".into(),
        version: 1,
        instance: Some(1),
        step: "nudge".into(),
        channel: "push".into(),
        at: Ts(1_000),
        title: None,
        subject: None,
        body: "Still there?".into(),
        to: None,
    };

    let err = outlet.send(&message).await.expect_err("nothing listens");
    assert!(
        matches!(
            err,
            StateError::Downstream {
                service: "gateway",
                ..
            }
        ),
        "{err:?}"
    );
    let said = err.to_string();
    assert!(
        said.starts_with("the gateway is unavailable: Send: "),
        "{said}"
    );
    assert!(!said.contains("state store"), "{said}");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn an_unreachable_scheduler_is_named_as_the_scheduler() {
    let sink = RemoteScheduler::new(nobody_listening());
    let timer = Timer {
        id: "t-1".into(),
        workspace: "default".into(),
        user: "ada".into(),
        due: Ts(2_000),
        journey: "onboarding".into(),
        trace: None,
        instance: 1,
    };

    let err = sink.schedule(&timer).await.expect_err("nothing listens");
    let said = err.to_string();
    assert!(
        said.starts_with("the scheduler is unavailable: SetTimers: "),
        "{said}"
    );

    let err = sink
        .cancel("default", "ada", "t-1")
        .await
        .expect_err("nothing listens");
    assert!(
        err.to_string()
            .starts_with("the scheduler is unavailable: CancelTimers: "),
        "{err}"
    );
}
