//! What a partition does with each answer to a `Send`. Only the gateway's own word on the
//! message (it refused it, or reported that it cannot be sent) ends the send; any other answer
//! (a connection that broke mid-call, a token the gateway does not take, a port that serves
//! something else) goes back to the partition, which sends its batch again.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use beckon_core::{OutboundMessage, Ts};
use beckon_proto::v1 as pb;
use beckon_proto::v1::gateway_server::{Gateway, GatewayServer};
use beckon_user_state::StateError;
use beckon_user_state::outlet::Outlet;
use beckon_user_state::remote::RemoteGateway;
use futures::Stream;
use tonic::{Code, Request, Response, Status};

/// A gateway that answers every `Send` with the code it is told to, counting the calls.
#[derive(Clone, Default)]
struct Answering {
    code: Arc<Mutex<Option<Code>>>,
    sends: Arc<Mutex<u32>>,
}

type Items = Pin<Box<dyn Stream<Item = Result<pb::InboxMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Gateway for Answering {
    async fn send(
        &self,
        _: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        *self.sends.lock().expect("count") += 1;
        match *self.code.lock().expect("code") {
            None => Ok(Response::new(pb::SendResponse {
                outcome: "sent".into(),
                provider_id: "p-1".into(),
                reason: String::new(),
            })),
            Some(code) => Err(Status::new(code, "as told")),
        }
    }

    async fn list_inbox(
        &self,
        _: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn mark_inbox_read(
        &self,
        _: Request<pb::InboxItemRequest>,
    ) -> Result<Response<pb::InboxItemResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn dismiss_inbox_message(
        &self,
        _: Request<pb::InboxItemRequest>,
    ) -> Result<Response<pb::InboxItemResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type SubscribeInboxStream = Items;

    async fn subscribe_inbox(
        &self,
        _: Request<pb::ListInboxRequest>,
    ) -> Result<Response<Items>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn report_outcome(
        &self,
        _: Request<pb::OutcomeRequest>,
    ) -> Result<Response<pb::OutcomeResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

async fn serve(gateway: Answering) -> tonic::transport::Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GatewayServer::new(gateway))
            .serve_with_incoming(incoming),
    );
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy()
}

fn welcome() -> OutboundMessage {
    OutboundMessage {
        idempotency_key: "k-1".into(),
        workspace: "default".into(),
        user_id: "ada".into(),
        journey: "welcome".into(),
        version: 1,
        instance: Some(1),
        step: "hello".into(),
        channel: "email".into(),
        at: Ts(1_000),
        title: None,
        subject: Some("Hello".into()),
        body: "Welcome aboard".into(),
        to: None,
    }
}

#[tokio::test]
async fn only_the_gateways_own_refusals_end_a_send() {
    let gateway = Answering::default();
    let outlet = RemoteGateway::new(serve(gateway.clone()).await);

    // The gateway's word on the message: reported by the gateway, not sent again.
    for code in [Code::InvalidArgument, Code::FailedPrecondition] {
        *gateway.code.lock().expect("code") = Some(code);
        let sent = outlet.send(&welcome()).await;
        assert!(sent.is_ok(), "{code:?}: {sent:?}");
    }

    // Anything else leaves the message unsent: the batch goes again, and the message with it.
    for code in [
        Code::Unknown,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::Unimplemented,
        Code::Internal,
        Code::NotFound,
        Code::Unavailable,
    ] {
        *gateway.code.lock().expect("code") = Some(code);
        let err = outlet.send(&welcome()).await.expect_err("sent again later");
        assert!(
            matches!(
                err,
                StateError::Downstream {
                    service: "gateway",
                    ..
                }
            ),
            "{code:?}: {err:?}"
        );
        assert!(
            err.to_string().contains(&format!("{code:?}")),
            "{code:?}: {err}"
        );
    }

    // Once the gateway takes it (a token put right, a connection back), it goes out.
    *gateway.code.lock().expect("code") = None;
    outlet.send(&welcome()).await.expect("sent");
}
