//! A fake APNs: HTTP/2 (h2c) on a free port of 127.0.0.1 that checks the provider token the
//! way APNs does (ES256 signature, `kid`, `iss`, `iat` not older than an hour on the test's
//! clock) and answers with APNs's own error bodies.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use beckon_core::{Clock, VirtualClock};
use beckon_gateway::jwt;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub const TEAM_ID: &str = "TEAM123456";
pub const KEY_ID: &str = "KEYID78901";
pub const TOPIC: &str = "com.beckon.shop";

/// One request as APNs saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub token: String,
    pub headers: HashMap<String, String>,
    pub payload: Value,
    pub jwt: String,
    pub iat: i64,
    pub http2: bool,
}

#[derive(Default)]
struct State {
    public_key: Vec<u8>,
    clock: VirtualClock,
    script: Mutex<HashMap<String, VecDeque<(u16, &'static str)>>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct FakeApns {
    pub addr: SocketAddr,
    /// The `.p8` key the provider must sign with, as PKCS#8 PEM.
    pub key_pem: String,
    state: Arc<State>,
}

impl FakeApns {
    /// Answers the next requests for `token` with these (status, reason) pairs, in order.
    pub fn script(&self, token: &str, answers: &[(u16, &'static str)]) {
        self.state
            .script
            .lock()
            .unwrap()
            .insert(token.to_string(), answers.iter().copied().collect());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn endpoint(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).unwrap()
    }
}

/// A device token as APNs issues them: 32 bytes in hex.
pub fn device_token(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

pub async fn start(clock: VirtualClock) -> FakeApns {
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let key_pem = super::pem("PRIVATE KEY", pkcs8.as_ref());

    let state = Arc::new(State {
        public_key: pair.public_key().as_ref().to_vec(),
        clock,
        ..State::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let server_state = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = server_state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    FakeApns {
        addr,
        key_pem,
        state,
    }
}

fn answer(status: u16, reason: &str) -> Response<Full<Bytes>> {
    let mut body = json!({ "reason": reason });
    if status == 410 {
        body["timestamp"] = json!(1_700_000_000_000_i64);
    }
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let http2 = req.version() == hyper::Version::HTTP_2;
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let Some(token) = req
        .uri()
        .path()
        .strip_prefix("/3/device/")
        .map(str::to_string)
    else {
        return Ok(answer(404, "BadPath"));
    };
    if req.method() != hyper::Method::POST {
        return Ok(answer(405, "MethodNotAllowed"));
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();

    // Provider token: signature, key id, team id, age.
    let Some(jwt) = headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("bearer "))
        .map(str::to_string)
    else {
        return Ok(answer(403, "MissingProviderToken"));
    };
    let key = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        state.public_key.clone(),
    );
    let Some((header, claims)) = jwt::decode_verified(&jwt, |m, s| key.verify(m, s).is_ok()) else {
        return Ok(answer(403, "InvalidProviderToken"));
    };
    if header["alg"] != "ES256" || header["kid"] != KEY_ID || claims["iss"] != TEAM_ID {
        return Ok(answer(403, "InvalidProviderToken"));
    }
    let iat = claims["iat"].as_i64().unwrap_or_default();
    if state.clock.now().0 / 1_000 - iat > 3_600 {
        return Ok(answer(403, "ExpiredProviderToken"));
    }

    let Some(topic) = headers.get("apns-topic") else {
        return Ok(answer(400, "MissingTopic"));
    };
    let live = headers.get("apns-push-type").map(String::as_str) == Some("liveactivity");
    if live != topic.ends_with(".push-type.liveactivity") {
        return Ok(answer(400, "TopicDisallowed"));
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return Ok(answer(400, "PayloadEmpty"));
    };

    state.seen.lock().unwrap().push(Seen {
        token: token.clone(),
        headers: headers.clone(),
        payload,
        jwt,
        iat,
        http2,
    });

    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(answer(400, "BadDeviceToken"));
    }
    let scripted = state
        .script
        .lock()
        .unwrap()
        .get_mut(&token)
        .and_then(VecDeque::pop_front);
    if let Some((status, reason)) = scripted {
        return Ok(answer(status, reason));
    }

    let id = headers.get("apns-id").cloned().unwrap_or_default();
    Ok(Response::builder()
        .status(200)
        .header("apns-id", id)
        .body(Full::new(Bytes::new()))
        .unwrap())
}
