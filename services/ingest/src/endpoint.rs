//! The Ingest service as it is served: tonic's generated server with a request size limit
//! chosen to fit the documented event limits, and a refusal of larger requests phrased like
//! every other one.

use std::convert::Infallible;
use std::task::{Context, Poll};

use beckon_proto::v1::ingest_server::IngestServer;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::grpc::{IngestService, MAX_BATCH};
use crate::segment::MAX_EVENT_BYTES;

/// Largest request the Ingest service reads: a `Batch` of `MAX_BATCH` events of
/// `MAX_EVENT_BYTES` each, with each event's field tag and length (4 bytes at most at that
/// size), and a kilobyte for the workspace. tonic's own default (4 MiB) would refuse batches
/// well within the event limits.
pub const MAX_REQUEST_BYTES: usize = MAX_BATCH * (MAX_EVENT_BYTES + 4) + 1024;

/// The words tonic uses when a request is larger than the limit; its status says nothing of
/// which field is to blame, so such an answer is replaced.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// The Ingest gRPC service with its request size limit, ready for a router.
#[derive(Clone)]
pub struct IngestEndpoint {
    inner: IngestServer<IngestService>,
}

impl IngestEndpoint {
    pub fn new(service: IngestService) -> IngestEndpoint {
        let inner = IngestServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
        IngestEndpoint { inner }
    }
}

impl NamedService for IngestEndpoint {
    const NAME: &'static str = <IngestServer<IngestService> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for IngestEndpoint {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let field = if request.uri().path().ends_with("/Batch") {
            "events"
        } else {
            "event"
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(reworded(response, field))
        })
    }
}

/// The response, or, when tonic refused the request as too large, an `INVALID_ARGUMENT`
/// naming `field`, the request's size and the limit.
fn reworded(response: http::Response<Body>, field: &str) -> http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::OutOfRange {
        return response;
    }
    let Some(found) = status
        .message()
        .strip_prefix(TONIC_TOO_LARGE)
        .and_then(|rest| rest.split(' ').next())
    else {
        return response;
    };

    let message = format!(
        "{field}: the request is {found} bytes; at most {MAX_REQUEST_BYTES} \
         ({MAX_BATCH} events of at most {MAX_EVENT_BYTES} bytes)"
    );
    Status::invalid_argument(message).into_http()
}
