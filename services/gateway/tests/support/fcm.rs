//! A fake FCM HTTP v1 API and OAuth token endpoint on 127.0.0.1 (axum). The token endpoint
//! verifies the RS256 assertion with the service account's public key; the send endpoint
//! accepts only access tokens it issued that have not expired on the test's clock, and
//! answers with FCM's own error bodies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use beckon_core::{Clock, VirtualClock};
use beckon_gateway::fcm::{FCM_SCOPE, ServiceAccount};
use beckon_gateway::jwt;
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};

pub const PROJECT: &str = "beckon-shop";

/// An error FCM can answer with.
#[derive(Clone, Copy, Debug)]
pub enum FcmAnswer {
    Unregistered,
    InvalidToken,
    InvalidOtherField,
    QuotaExceeded,
    Unavailable,
    Unauthenticated,
}

#[derive(Default)]
struct Inner {
    public_key: Vec<u8>,
    token_url: String,
    clock: VirtualClock,
    /// Access token -> expiry in unix milliseconds.
    issued: Mutex<HashMap<String, i64>>,
    script: Mutex<HashMap<String, VecDeque<FcmAnswer>>>,
    sends: Mutex<Vec<(String, Value)>>,
}

#[derive(Clone)]
pub struct FakeFcm {
    pub base: url::Url,
    pub token_url: url::Url,
    pub account: ServiceAccount,
    inner: Arc<Inner>,
}

impl FakeFcm {
    pub fn script(&self, token: &str, answers: &[FcmAnswer]) {
        self.inner
            .script
            .lock()
            .unwrap()
            .insert(token.to_string(), answers.iter().copied().collect());
    }

    /// Every accepted-for-processing send: (access token used, request body).
    pub fn sends(&self) -> Vec<(String, Value)> {
        self.inner.sends.lock().unwrap().clone()
    }

    pub fn tokens_issued(&self) -> usize {
        self.inner.issued.lock().unwrap().len()
    }
}

/// A fresh 2048-bit RSA key as PKCS#8 PEM, made by the openssl command-line tool (ring can
/// sign with RSA keys but not make them).
fn generate_rsa_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("run openssl genpkey");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).unwrap()
}

fn public_key(pem: &str) -> Vec<u8> {
    use base64::Engine;

    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let pair = signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    pair.public_key().as_ref().to_vec()
}

pub async fn start(clock: VirtualClock) -> FakeFcm {
    let pem = generate_rsa_pem();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = url::Url::parse(&format!("http://{addr}")).unwrap();
    let token_url = base.join("/token").unwrap();

    let inner = Arc::new(Inner {
        public_key: public_key(&pem),
        token_url: token_url.to_string(),
        clock,
        ..Inner::default()
    });
    let router = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .route("/v1/projects/{project}/{method}", axum::routing::post(send))
        .with_state(inner.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let account = ServiceAccount::from_json(
        &json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "key-0001",
            "private_key": pem,
            "client_email": "beckon@beckon-shop.iam.gserviceaccount.com",
            "token_uri": token_url.as_str(),
        })
        .to_string(),
    )
    .unwrap();
    FakeFcm {
        base,
        token_url,
        account,
        inner,
    }
}

async fn token(
    State(inner): State<Arc<Inner>>,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let invalid = |why: &str| {
        let body = json!({ "error": "invalid_grant", "error_description": why });
        (StatusCode::BAD_REQUEST, Json(body))
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return invalid("grant_type");
    }
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let key = signature::UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        inner.public_key.clone(),
    );
    let Some((header, claims)) = jwt::decode_verified(&assertion, |m, s| key.verify(m, s).is_ok())
    else {
        return invalid("Invalid JWT Signature.");
    };
    let now = inner.clock.now().0 / 1_000;
    let iat = claims["iat"].as_i64().unwrap_or_default();
    let exp = claims["exp"].as_i64().unwrap_or_default();
    if header["alg"] != "RS256"
        || header["kid"] != "key-0001"
        || claims["aud"] != inner.token_url.as_str()
        || claims["scope"] != FCM_SCOPE
        || claims["iss"] != "beckon@beckon-shop.iam.gserviceaccount.com"
        || exp - iat > 3_600
        || (now - iat).abs() > 300
    {
        return invalid("claims");
    }

    let mut issued = inner.issued.lock().unwrap();
    let access = format!("ya29.fake-{}", issued.len() + 1);
    issued.insert(access.clone(), inner.clock.now().0 + 3_599_000);
    let body = json!({ "access_token": access, "expires_in": 3599, "token_type": "Bearer" });
    (StatusCode::OK, Json(body))
}

fn fcm_error(status: u16, state: &str, code: Option<&str>, field: Option<&str>) -> Value {
    let mut details = Vec::new();
    if let Some(code) = code {
        details.push(json!({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }));
    }
    if let Some(field) = field {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": field, "description": "Invalid value" }],
        }));
    }
    json!({ "error": { "code": status, "message": "fake", "status": state, "details": details } })
}

async fn send(
    State(inner): State<Arc<Inner>>,
    Path((project, method)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if project != PROJECT || method != "messages:send" {
        return (StatusCode::NOT_FOUND, Json(json!({})));
    }
    let access = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let expiry = inner.issued.lock().unwrap().get(&access).copied();
    if expiry.is_none_or(|e| e <= inner.clock.now().0) {
        let body = fcm_error(401, "UNAUTHENTICATED", None, None);
        return (StatusCode::UNAUTHORIZED, Json(body));
    }

    let token = body["message"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    inner.sends.lock().unwrap().push((access, body));
    let scripted = inner
        .script
        .lock()
        .unwrap()
        .get_mut(&token)
        .and_then(VecDeque::pop_front);
    let (status, error) = match scripted {
        None => {
            let name = format!("projects/{PROJECT}/messages/0:{}", token.len());
            return (StatusCode::OK, Json(json!({ "name": name })));
        }
        Some(FcmAnswer::Unregistered) => {
            (404, fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"), None))
        }
        Some(FcmAnswer::InvalidToken) => (
            400,
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                Some("message.token"),
            ),
        ),
        Some(FcmAnswer::InvalidOtherField) => (
            400,
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                Some("message.android.ttl"),
            ),
        ),
        Some(FcmAnswer::QuotaExceeded) => (
            429,
            fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"), None),
        ),
        Some(FcmAnswer::Unavailable) => (
            503,
            fcm_error(503, "UNAVAILABLE", Some("UNAVAILABLE"), None),
        ),
        Some(FcmAnswer::Unauthenticated) => (401, fcm_error(401, "UNAUTHENTICATED", None, None)),
    };
    (StatusCode::from_u16(status).unwrap(), Json(error))
}
