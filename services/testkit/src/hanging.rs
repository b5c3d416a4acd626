//! A provider that takes every connection, reads the request's head and never answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Listens on a free port of 127.0.0.1 until the test ends, counting the requests it was sent
/// by their `Idempotency-Key`: one per attempt, since a request that timed out takes its
/// connection with it.
#[derive(Clone)]
pub struct Hanging {
    pub addr: SocketAddr,
    requests: Arc<Mutex<HashMap<String, usize>>>,
}

impl Hanging {
    pub async fn start() -> Hanging {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(hold(stream, counted.clone()));
            }
        });
        Hanging { addr, requests }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests that carried `key`.
    pub fn attempts(&self, key: &str) -> usize {
        self.requests
            .lock()
            .map(|r| r.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Reads the request's head, counts it, then keeps the connection open without a word.
async fn hold(mut stream: TcpStream, requests: Arc<Mutex<HashMap<String, usize>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let key = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("idempotency-key"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    if let Ok(mut requests) = requests.lock() {
        *requests.entry(key).or_default() += 1;
    }

    // Whatever else the client sends is read and dropped; nothing is ever written back.
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}
