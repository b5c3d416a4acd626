//! Services as child processes of this binary, killed when their handle drops.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

/// A running `beckon serve <service>`.
pub struct Service {
    pub addr: String,
    child: Child,
}

impl Service {
    /// Starts `beckon serve <service> --listen 127.0.0.1:0 <args>` and waits for its
    /// `listening` line.
    pub fn start(service: &str, args: &[&str], redis_url: Option<&str>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the beckon binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", service, "--listen", "127.0.0.1:0"])
            .args(args)
            .env("BECKON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Settings come only from the flags given here.
        for (key, _) in std::env::vars() {
            if key.starts_with("BECKON_") && key != "BECKON_LOG" {
                cmd.env_remove(key);
            }
        }
        if let Some(url) = redis_url {
            cmd.args(["--redis-url", url]);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting beckon serve {service}"))?;

        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("listening ") {
                        break addr.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    anyhow::bail!("beckon serve {service} exited before listening");
                }
            }
        };
        // Keep draining its standard output so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Service { addr, child })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages file path as a flag value.
pub fn path_arg(path: &Path) -> String {
    path.display().to_string()
}
