//! A real SMTP server for tests: aiosmtpd (from PyPI) on a free port of 127.0.0.1, saving
//! every accepted message to a folder as raw bytes.
//!
//! Recipients whose local part starts with `busy` get `451` twice and are accepted on the
//! third try; those starting with `gone` get `550`.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SERVER: &str = r#"
import asyncio, os, sys
from aiosmtpd.smtp import SMTP

OUT = sys.argv[1]

class Handler:
    def __init__(self):
        self.busy = {}
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split('@')[0]
        if local.startswith('busy'):
            self.busy[address] = self.busy.get(address, 0) + 1
            if self.busy[address] <= 2:
                return '451 4.3.0 Mailbox busy, try again later'
        if local.startswith('gone'):
            return '550 5.1.1 No such user here'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(OUT, '%04d.eml' % self.count)
        with open(path + '.tmp', 'wb') as f:
            f.write(envelope.original_content)
        os.replace(path + '.tmp', path)
        return '250 2.0.0 Message accepted'

async def main():
    loop = asyncio.get_running_loop()
    handler = Handler()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname='fake-smtp.test'), '127.0.0.1', 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

pub struct SmtpServer {
    pub port: u16,
    pub mailbox: PathBuf,
    _dir: tempfile::TempDir,
    _child: Child,
}

impl SmtpServer {
    /// Every message received so far, as raw bytes, in arrival order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.mailbox)
            .expect("read mailbox")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read(p).expect("read message"))
            .collect()
    }
}

/// Installs aiosmtpd from PyPI when it is missing.
fn ensure_aiosmtpd() {
    let present = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return;
    }
    let installed = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "aiosmtpd"])
        .status()
        .expect("run pip");
    assert!(installed.success(), "pip install aiosmtpd failed");
}

pub async fn start() -> SmtpServer {
    ensure_aiosmtpd();

    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("smtp_server.py");
    std::fs::write(&script, SERVER).expect("write server script");
    let mailbox = dir.path().join("mailbox");
    std::fs::create_dir(&mailbox).expect("mailbox dir");

    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&mailbox)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");

    // The server prints its port once it is listening.
    let stdout = child.stdout.take().expect("server stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("read port");
    let port = line.trim().parse().expect("port number");

    SmtpServer {
        port,
        mailbox,
        _dir: dir,
        _child: child,
    }
}
