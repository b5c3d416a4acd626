//! A Redis Cluster of masters only, on loopback.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::server::{Options, RedisServer, free_port};
use crate::{Result, TestkitError};

/// How long to wait for the nodes to agree on the slot map: 500 polls of 20 ms.
const POLL: Duration = Duration::from_millis(20);
const POLL_ATTEMPTS: u32 = 500;

/// A running cluster; every node is killed when it drops.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes with `--cluster-enabled yes` (no replicas), joins them with
    /// `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`.
    /// Always starts its own servers, whatever `REDIS_URL` says.
    pub fn start(masters: usize) -> Result<RedisCluster> {
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            nodes.push(start_node()?);
        }
        let cluster = RedisCluster { nodes };
        cluster.create()?;
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// One URL per node, for a cluster client's initial nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    fn create(&self) -> Result<()> {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port()));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TestkitError::Spawn {
                program: "redis-cli".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(TestkitError::Cluster(format!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    fn wait_ok(&self) -> Result<()> {
        for _ in 0..POLL_ATTEMPTS {
            if self.all_ok() {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        Err(TestkitError::Cluster(
            "cluster_state never became ok".into(),
        ))
    }

    fn all_ok(&self) -> bool {
        self.nodes.iter().all(|node| {
            let Ok(mut con) = node.connection() else {
                return false;
            };
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut con)
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }
}

fn start_node() -> Result<RedisServer> {
    // The bus port defaults to port + 10000, which may be taken or past 65535 for a port the
    // kernel picked; naming a free one avoids both.
    let bus = free_port()?;
    let options = Options {
        aof: None,
        extra: vec![
            ("cluster-enabled".into(), "yes".into()),
            ("cluster-config-file".into(), "nodes.conf".into()),
            ("cluster-node-timeout".into(), "5000".into()),
            ("cluster-port".into(), bus.to_string()),
        ],
    };
    let server = RedisServer::start_own(options)?;
    Ok(server)
}
