//! Where published definitions live: Redis for services, memory for `serve all` on the
//! embedded store and for tests.
//!
//! A workspace's definitions only grow: publishing adds documents that are new, accepts ones
//! published before with the same content, and refuses a published version with other
//! content. Each publication that adds something gets the next release number, and every
//! follower learns of it at once (a broadcast within the process, Redis pub/sub across them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use beckon_redis::resend_if_lost;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::documents::Document;
use crate::error::DefinitionError;

/// Every document of a workspace, by key, as of one release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    pub workspace: String,
    /// 0 when nothing was published.
    pub number: u64,
    /// `(key, canonical document)`, in key order.
    pub documents: Vec<(String, String)>,
}

/// What one publication changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub release: u64,
    /// Keys of the documents that were new.
    pub added: Vec<String>,
}

/// A release number of a workspace, as announced to followers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub workspace: String,
    pub release: u64,
}

pub trait DefinitionStore: Send + Sync + 'static {
    /// Adds the documents that are new, atomically: all of them or none.
    fn publish<'a>(
        &'a self,
        workspace: &'a str,
        docs: &'a [Document],
    ) -> BoxFuture<'a, Result<Published, DefinitionError>>;

    /// The current release of a workspace.
    fn release<'a>(&'a self, workspace: &'a str)
    -> BoxFuture<'a, Result<Release, DefinitionError>>;

    /// New releases as they are published (by anyone sharing the store).
    fn announcements(&self) -> broadcast::Receiver<Announcement>;
}

/// Announcements buffered per follower; a follower that falls further behind re-reads the
/// current release, which is all it needs.
const ANNOUNCE_BUFFER: usize = 64;

#[derive(Default)]
struct Workspace {
    documents: BTreeMap<String, String>,
    release: u64,
}

/// Definitions kept in the process.
pub struct MemoryDefinitions {
    workspaces: Mutex<HashMap<String, Workspace>>,
    tx: broadcast::Sender<Announcement>,
}

impl Default for MemoryDefinitions {
    fn default() -> Self {
        MemoryDefinitions {
            workspaces: Mutex::new(HashMap::new()),
            tx: broadcast::channel(ANNOUNCE_BUFFER).0,
        }
    }
}

impl MemoryDefinitions {
    pub fn new() -> MemoryDefinitions {
        MemoryDefinitions::default()
    }

    fn publish_now(
        &self,
        workspace: &str,
        docs: &[Document],
    ) -> Result<Published, DefinitionError> {
        let mut all = self.workspaces.lock().unwrap_or_else(|p| p.into_inner());
        let ws = all.entry(workspace.to_string()).or_default();
        for d in docs {
            if ws
                .documents
                .get(&d.key())
                .is_some_and(|cur| *cur != d.canonical)
            {
                return Err(changed(d));
            }
        }
        let mut added = Vec::new();
        for d in docs {
            let key = d.key();
            if !ws.documents.contains_key(&key) {
                ws.documents.insert(key.clone(), d.canonical.clone());
                added.push(key);
            }
        }
        if !added.is_empty() {
            ws.release += 1;
            // Nobody listening is fine: followers read the current release when they start.
            let _ = self.tx.send(Announcement {
                workspace: workspace.to_string(),
                release: ws.release,
            });
        }
        Ok(Published {
            release: ws.release,
            added,
        })
    }
}

fn changed(d: &Document) -> DefinitionError {
    DefinitionError::Changed {
        file: d.key(),
        kind: d.kind.to_string(),
        id: d.id.clone(),
        version: d.version,
    }
}

impl DefinitionStore for MemoryDefinitions {
    fn publish<'a>(
        &'a self,
        workspace: &'a str,
        docs: &'a [Document],
    ) -> BoxFuture<'a, Result<Published, DefinitionError>> {
        Box::pin(async move { self.publish_now(workspace, docs) })
    }

    fn release<'a>(
        &'a self,
        workspace: &'a str,
    ) -> BoxFuture<'a, Result<Release, DefinitionError>> {
        Box::pin(async move {
            let all = self.workspaces.lock().unwrap_or_else(|p| p.into_inner());
            Ok(all.get(workspace).map_or_else(
                || Release {
                    workspace: workspace.to_string(),
                    ..Release::default()
                },
                |ws| Release {
                    workspace: workspace.to_string(),
                    number: ws.release,
                    documents: ws.documents.clone().into_iter().collect(),
                },
            ))
        })
    }

    fn announcements(&self) -> broadcast::Receiver<Announcement> {
        self.tx.subscribe()
    }
}

/// Adds the new documents, refuses changed ones, bumps the release and announces it, in one
/// step. KEYS: documents hash, release counter. ARGV: channel, workspace, then key and
/// document pairs. Answers `changed <key>` or `ok <release> <added keys...>`.
const PUBLISH: &str = r"
for i = 3, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and cur ~= ARGV[i + 1] then
    return {'changed', ARGV[i]}
  end
end
local out = {'ok', ''}
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    table.insert(out, ARGV[i])
  end
end
local n
if #out > 2 then
  n = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. n)
else
  n = tonumber(redis.call('GET', KEYS[2]) or '0')
end
out[2] = tostring(n)
return out
";

/// Definitions in Redis. One hash of documents and one counter per workspace, under one
/// hash tag, so publishing is a single script on Redis Cluster too.
pub struct RedisDefinitions<C> {
    conn: C,
    prefix: String,
    script: redis::Script,
    tx: broadcast::Sender<Announcement>,
}

impl<C> RedisDefinitions<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    /// `prefix` starts every key (`bk`). Announcements from other processes arrive only once
    /// [`RedisDefinitions::listen`] runs.
    pub fn new(conn: C, prefix: &str) -> RedisDefinitions<C> {
        RedisDefinitions {
            conn,
            prefix: prefix.to_string(),
            script: redis::Script::new(PUBLISH),
            tx: broadcast::channel(ANNOUNCE_BUFFER).0,
        }
    }

    fn documents_key(&self, workspace: &str) -> String {
        format!("{}:{{defs:{workspace}}}:documents", self.prefix)
    }

    fn release_key(&self, workspace: &str) -> String {
        format!("{}:{{defs:{workspace}}}:release", self.prefix)
    }

    /// The pub/sub channel that carries `<workspace> <release>` for every publication.
    pub fn channel(&self) -> String {
        format!("{}:defs:announce", self.prefix)
    }

    /// Relays publications made by any process to this process's followers, reconnecting
    /// after a lost connection, until `stop` resolves. Each time it (re)subscribes it also
    /// announces the current release of `workspaces`: publications made before the
    /// subscription took hold would otherwise go unheard.
    pub async fn listen(
        &self,
        client: redis::Client,
        workspaces: Vec<String>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            let session = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(self.channel()).await?;
                for ws in &workspaces {
                    let release = self.release_number(ws).await?;
                    let _ = self.tx.send(Announcement {
                        workspace: ws.clone(),
                        release,
                    });
                }
                tracing::debug!(channel = %self.channel(), "following definition releases");
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let payload: String = msg.get_payload()?;
                    if let Some((ws, n)) = payload.rsplit_once(' ')
                        && let Ok(release) = n.parse()
                    {
                        let _ = self.tx.send(Announcement {
                            workspace: ws.to_string(),
                            release,
                        });
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                () = &mut stop => return,
                result = session => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "definition announcements interrupted");
                    }
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
        }
    }

    async fn release_number(&self, workspace: &str) -> Result<u64, redis::RedisError> {
        let mut get = redis::cmd("GET");
        get.arg(self.release_key(workspace));
        let n: Option<u64> = resend_if_lost(&self.conn, &get).await?;
        Ok(n.unwrap_or(0))
    }
}

impl<C> DefinitionStore for RedisDefinitions<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    fn publish<'a>(
        &'a self,
        workspace: &'a str,
        docs: &'a [Document],
    ) -> BoxFuture<'a, Result<Published, DefinitionError>> {
        Box::pin(async move {
            let mut invocation = self.script.prepare_invoke();
            invocation
                .key(self.documents_key(workspace))
                .key(self.release_key(workspace))
                .arg(self.channel())
                .arg(workspace);
            for d in docs {
                invocation.arg(d.key()).arg(&d.canonical);
            }
            // Sent once more when its connection was lost. The script adds only documents not
            // there yet and counts a release only for those: after a first run that went
            // through with its answer lost, the second adds nothing and answers the release
            // as it stands, listing nothing as added.
            let answer: Vec<String> = resend_if_lost(&self.conn, &invocation).await?;
            match answer.as_slice() {
                [status, key] if status == "changed" => Err(docs
                    .iter()
                    .find(|d| d.key() == *key)
                    .map(changed)
                    .unwrap_or_else(|| DefinitionError::Corrupt {
                        key: key.clone(),
                        reason: "changed document not in the request".into(),
                    })),
                [status, release, added @ ..] if status == "ok" => {
                    let release = release.parse().map_err(|_| DefinitionError::Corrupt {
                        key: self.release_key(workspace),
                        reason: format!("release `{release}` is not a number"),
                    })?;
                    // Followers in this process hear it at once, not only through pub/sub.
                    if !added.is_empty() {
                        let _ = self.tx.send(Announcement {
                            workspace: workspace.to_string(),
                            release,
                        });
                    }
                    Ok(Published {
                        release,
                        added: added.to_vec(),
                    })
                }
                other => Err(DefinitionError::Corrupt {
                    key: self.documents_key(workspace),
                    reason: format!("unexpected answer from the publish script: {other:?}"),
                }),
            }
        })
    }

    fn release<'a>(
        &'a self,
        workspace: &'a str,
    ) -> BoxFuture<'a, Result<Release, DefinitionError>> {
        Box::pin(async move {
            let mut read = redis::pipe();
            read.atomic()
                .hgetall(self.documents_key(workspace))
                .get(self.release_key(workspace));
            let (documents, number): (BTreeMap<String, String>, Option<u64>) =
                resend_if_lost(&self.conn, &read).await?;
            Ok(Release {
                workspace: workspace.to_string(),
                number: number.unwrap_or(0),
                documents: documents.into_iter().collect(),
            })
        })
    }

    fn announcements(&self) -> broadcast::Receiver<Announcement> {
        self.tx.subscribe()
    }
}
