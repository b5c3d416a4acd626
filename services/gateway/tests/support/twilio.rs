//! A fake Twilio Messages API on 127.0.0.1 (axum): basic auth, form fields, Twilio's JSON
//! answers and error bodies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{Value, json};

pub const SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "twilio-auth-token-42";

#[derive(Default)]
struct Inner {
    /// By `To` number: (status, Twilio error code) answers, in order.
    script: Mutex<HashMap<String, VecDeque<(u16, i64)>>>,
    received: Mutex<Vec<HashMap<String, String>>>,
    /// Called before answering, so a test can stop the gateway between "accepted" and
    /// "answered".
    hold: Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>>,
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub base: url::Url,
    inner: Arc<Inner>,
}

impl FakeTwilio {
    pub fn script(&self, to: &str, answers: &[(u16, i64)]) {
        self.inner
            .script
            .lock()
            .unwrap()
            .insert(to.to_string(), answers.iter().copied().collect());
    }

    /// Every message that passed auth, as its form fields.
    pub fn received(&self) -> Vec<HashMap<String, String>> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Makes the next requests signal `tx` after they were recorded, then never answer.
    pub fn hang_after_accepting(&self, tx: tokio::sync::mpsc::UnboundedSender<()>) {
        *self.inner.hold.lock().unwrap() = Some(tx);
    }

    pub fn answer_normally(&self) {
        *self.inner.hold.lock().unwrap() = None;
    }
}

pub async fn start() -> FakeTwilio {
    let inner = Arc::new(Inner::default());
    let router = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            axum::routing::post(create),
        )
        .with_state(inner.clone());
    let addr = super::serve(router).await;
    FakeTwilio {
        base: url::Url::parse(&format!("http://{addr}")).unwrap(),
        inner,
    }
}

fn error(status: u16, code: i64) -> (StatusCode, Json<Value>) {
    let body = json!({
        "code": code,
        "message": "fake error",
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    (StatusCode::from_u16(status).unwrap(), Json(body))
}

async fn create(
    State(inner): State<Arc<Inner>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if sid != SID || auth != Some(format!("Basic {expected}").as_str()) {
        return error(401, 20003);
    }
    let to = form.get("To").cloned().unwrap_or_default();
    if !to.starts_with('+') || form.get("Body").is_none_or(String::is_empty) {
        return error(400, 21211);
    }

    let n = {
        let mut received = inner.received.lock().unwrap();
        received.push(form.clone());
        received.len()
    };
    let hold = inner.hold.lock().unwrap().clone();
    if let Some(tx) = hold {
        let _ = tx.send(());
        std::future::pending::<()>().await;
    }

    let scripted = inner
        .script
        .lock()
        .unwrap()
        .get_mut(&to)
        .and_then(VecDeque::pop_front);
    if let Some((status, code)) = scripted {
        return error(status, code);
    }
    let body = json!({
        "sid": format!("SM{n:032}"),
        "status": "queued",
        "to": to,
        "from": form.get("From"),
        "body": form.get("Body"),
    });
    (StatusCode::CREATED, Json(body))
}
