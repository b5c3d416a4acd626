//! Requests whose bytes are not the message a method takes are the caller's error: every
//! service of `beckon serve all` answers them `INVALID_ARGUMENT` naming where decoding
//! stopped, and the connection stays usable for the next request.
//!
//! The client here is a bare HTTP/2 connection writing gRPC frames byte by byte, since a
//! generated client cannot send a string that is not UTF-8 or a frame cut short.

mod support;

use beckon_proto::v1::{
    Ack, Event, GetReleaseRequest, GetUserRequest, ListInboxRequest, ListJourneysRequest,
    PendingRequest, TrackRequest,
};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use serde_json::json;
use support::{Served, track, wall_clock_ms};
use tonic::{Code, Status};

/// Stands in for a string field's value in an encoding, then is overwritten with bytes that
/// are not UTF-8.
const MARK: &str = "@@MARK@@";

/// One HTTP/2 connection to a server, speaking gRPC by hand.
struct RawGrpc {
    sender: SendRequest<Full<Bytes>>,
}

impl RawGrpc {
    async fn connect(addr: &str) -> RawGrpc {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        RawGrpc { sender }
    }

    /// Calls `path` with `message` in one frame whose header says it is `declared` bytes long.
    /// Answers the status and the answer's first message, if any.
    async fn call_declaring(
        &mut self,
        path: &str,
        message: &[u8],
        declared: u32,
    ) -> (Status, Bytes) {
        let mut body = BytesMut::with_capacity(5 + message.len());
        body.put_u8(0);
        body.put_u32(declared);
        body.put_slice(message);
        let request = hyper::Request::post(format!("http://beckon{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body.freeze()))
            .expect("request");

        self.sender.ready().await.expect("connection ready");
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("an HTTP answer");

        // An error before any message comes in the headers alone; otherwise in the trailers.
        if let Some(status) = Status::from_header_map(response.headers()) {
            return (status, Bytes::new());
        }
        let body = response.into_body().collect().await.expect("the body");
        let trailers = body.trailers().cloned().unwrap_or_default();
        let status = Status::from_header_map(&trailers).expect("a grpc-status in the trailers");
        let frames = body.to_bytes();
        let first = match frames.get(1..5) {
            Some(len) => {
                let len = u32::from_be_bytes(len.try_into().expect("four bytes")) as usize;
                frames.slice(5..5 + len)
            }
            None => Bytes::new(),
        };
        (status, first)
    }

    /// Calls `path` with a body that holds no frame at all; answers the status.
    async fn call_without_message(&mut self, path: &str) -> Status {
        let request = hyper::Request::post(format!("http://beckon{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("an HTTP answer");
        if let Some(status) = Status::from_header_map(response.headers()) {
            return status;
        }
        let body = response.into_body().collect().await.expect("the body");
        let trailers = body.trailers().cloned().unwrap_or_default();
        Status::from_header_map(&trailers).expect("a grpc-status in the trailers")
    }

    /// Calls `path` with `message` in one well-formed frame; answers the status.
    async fn call(&mut self, path: &str, message: &[u8]) -> Status {
        self.call_answered(path, message).await.0
    }

    /// Calls `path` with `message` in one well-formed frame.
    async fn call_answered(&mut self, path: &str, message: &[u8]) -> (Status, Bytes) {
        let len = u32::try_from(message.len()).expect("small message");
        self.call_declaring(path, message, len).await
    }
}

/// `encoded` with [`MARK`] replaced by as many bytes that are not UTF-8.
fn not_utf8(mut encoded: Vec<u8>) -> Vec<u8> {
    let at = encoded
        .windows(MARK.len())
        .position(|w| w == MARK.as_bytes())
        .expect("the mark is in the encoding");
    encoded[at..at + MARK.len()].fill(0xff);
    encoded
}

fn valid_track(id: &str) -> Vec<u8> {
    let at = wall_clock_ms() - 60_000;
    let event = track("u-1", "App Opened", id, at, json!({}));
    TrackRequest {
        workspace: "default".into(),
        event: Some(event),
    }
    .encode_to_vec()
}

fn start_all() -> Served {
    Served::start("all", &["--partitions", "2"])
}

#[tokio::test]
async fn every_service_refuses_a_string_that_is_not_utf8_naming_the_field() {
    let served = start_all();
    let mut grpc = RawGrpc::connect(&served.addr).await;

    let ws = || "default".to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/beckon.v1.Ingest/Track",
            TrackRequest {
                workspace: ws(),
                event: Some(Event {
                    r#type: "track".into(),
                    user_id: MARK.into(),
                    event: "App Opened".into(),
                    ..Event::default()
                }),
            }
            .encode_to_vec(),
            "Event.user_id",
        ),
        (
            "/beckon.v1.UserState/GetUser",
            GetUserRequest {
                workspace: ws(),
                user_id: MARK.into(),
            }
            .encode_to_vec(),
            "GetUserRequest.user_id",
        ),
        (
            "/beckon.v1.Journeys/ListJourneys",
            ListJourneysRequest {
                workspace: MARK.into(),
            }
            .encode_to_vec(),
            "ListJourneysRequest.workspace",
        ),
        (
            "/beckon.v1.Journeys/WatchReleases",
            GetReleaseRequest {
                workspace: MARK.into(),
            }
            .encode_to_vec(),
            "GetReleaseRequest.workspace",
        ),
        (
            "/beckon.v1.Scheduler/Pending",
            PendingRequest {
                workspace: MARK.into(),
                partitions: vec![0],
            }
            .encode_to_vec(),
            "PendingRequest.workspace",
        ),
        (
            "/beckon.v1.Gateway/ListInbox",
            ListInboxRequest {
                workspace: ws(),
                user_id: MARK.into(),
            }
            .encode_to_vec(),
            "ListInboxRequest.user_id",
        ),
    ];

    for (path, encoded, field) in cases {
        let status = grpc.call(path, &not_utf8(encoded)).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(status.message().contains(field), "{path}: {status:?}");
        assert!(status.message().contains("UTF-8"), "{path}: {status:?}");
    }

    // The same connection carries well-formed requests on as before.
    let status = grpc
        .call("/beckon.v1.Ingest/Track", &valid_track("ok-1"))
        .await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    let listed = ListJourneysRequest { workspace: ws() }.encode_to_vec();
    let status = grpc.call("/beckon.v1.Journeys/ListJourneys", &listed).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
}

#[tokio::test]
async fn a_request_cut_short_is_refused_and_the_connection_goes_on() {
    let served = start_all();
    let mut grpc = RawGrpc::connect(&served.addr).await;
    let whole = valid_track("cut-1");

    // The frame is whole, the message in it is not: the event's bytes end early.
    let cut = &whole[..whole.len() - 3];
    let status = grpc.call("/beckon.v1.Ingest/Track", cut).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("TrackRequest.event"),
        "{status:?}"
    );

    // The frame's header promises more bytes than the request sends.
    let declared = u32::try_from(whole.len() + 10).expect("small message");
    let (status, _) = grpc
        .call_declaring("/beckon.v1.Ingest/Track", &whole, declared)
        .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("ended inside a message"),
        "{status:?}"
    );

    // Neither refusal appended anything: the whole event goes in afterwards as a new one.
    let (status, answer) = grpc.call_answered("/beckon.v1.Ingest/Track", &whole).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    let ack = Ack::decode(answer).expect("an Ack");
    assert!(ack.appended, "{ack:?}");
}

#[tokio::test]
async fn health_checks_and_requests_without_a_message_are_refused_too() {
    let served = start_all();
    let mut grpc = RawGrpc::connect(&served.addr).await;

    // The health service keeps tonic's codec; its refusal is the caller's error all the same.
    let not_text = [0x0a, 0x02, 0xff, 0xfe];
    let status = grpc.call("/grpc.health.v1.Health/Check", &not_text).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("HealthCheckRequest.service"),
        "{status:?}"
    );

    // A unary call whose body holds no message.
    let status = grpc.call_without_message("/beckon.v1.Ingest/Track").await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no message"), "{status:?}");

    // A well-formed health check on the same connection is answered.
    let status = grpc.call("/grpc.health.v1.Health/Check", &[]).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
}
