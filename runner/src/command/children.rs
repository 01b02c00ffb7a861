//! How a command enqueues child jobs: a line protocol on a unix socket
//! the runner listens on for the attempt, named by `JOB_CHILDREN_SOCKET`
//! in the command's environment. The socket reaches only this runner,
//! which validates and stores each child exactly as
//! [`crate::Context::enqueue`] does: the command never holds the store's
//! URL or the attempt's token.
//!
//! Each request is one line of JSON, each answer one line of JSON, in
//! order, on any number of connections:
//!
//! ```text
//! > {"job": {"kind": "resize", "params": {"page": 1}}}
//! < {"id": "0190...", "key": "#1", "existing": false}
//! > {"key": "page-2", "job": {"kind": "resize", "params": {"page": 2}}}
//! < {"id": "0190...", "key": "page-2", "existing": false}
//! > {"job": {"kind": "Bad"}}
//! < {"error": "invalid child job: kind: ...", "field": "kind"}
//! ```
//!
//! `job` is a `POST /jobs` body. Without `key`, the child's key is `#n`
//! in the order the runner receives unkeyed requests (send them one at a
//! time, or give keys). `existing: true` means an earlier attempt of this
//! job already enqueued the child under that key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::{Context, EnqueueError};

/// The variable naming the socket in the command's environment.
pub const SOCKET_VAR: &str = "JOB_CHILDREN_SOCKET";

/// A request line longer than this is refused (and the connection
/// closed): a child's request is a `POST /jobs` body, at most about that.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The socket of one attempt; removed when dropped.
pub(crate) struct ChildSocket {
    pub(crate) path: PathBuf,
    server: JoinHandle<()>,
}

impl ChildSocket {
    /// Listens for `ctx`'s attempt, in the temporary directory (private
    /// to the machine).
    pub(crate) fn open(ctx: &Context) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "job-children-{}-{}.sock",
            std::process::id(),
            ctx.attempt()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let server = tokio::spawn(serve(listener, ctx.clone()));
        Ok(Self { path, server })
    }
}

impl Drop for ChildSocket {
    fn drop(&mut self) {
        // Aborting the server drops its connections' tasks with it.
        self.server.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, ctx: Context) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(connection(stream, ctx.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "the children socket stopped accepting");
                return;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    key: Option<String>,
    job: Value,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Enqueued {
        id: String,
        key: String,
        existing: bool,
    },
    Refused {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}

async fn connection(stream: UnixStream, ctx: Context) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut lines).take(MAX_REQUEST_BYTES as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let too_long = line.len() > MAX_REQUEST_BYTES;
        let answer = if too_long {
            refused(
                format!("a request line is at most {MAX_REQUEST_BYTES} bytes"),
                None,
            )
        } else {
            answer(&ctx, &line).await
        };
        let mut text = serde_json::to_vec(&answer).expect("an answer serializes");
        text.push(b'\n');
        if write.write_all(&text).await.is_err() || too_long {
            return;
        }
    }
}

async fn answer(ctx: &Context, line: &[u8]) -> Answer {
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => {
            return refused(
                format!("not a request line ({{\"key\": .., \"job\": {{..}}}}): {e}"),
                None,
            )
        }
    };
    let (key, enqueued) = match request.key {
        Some(key) => {
            let enqueued = ctx.enqueue_keyed(&key, request.job).await;
            (key, enqueued)
        }
        None => {
            let (key, enqueued) = ctx.enqueue_in_order(request.job).await;
            (key, enqueued)
        }
    };
    match enqueued {
        Ok(child) => Answer::Enqueued {
            id: child.id.to_string(),
            key,
            existing: child.existing,
        },
        Err(e) => {
            let field = e.field().map(str::to_string);
            if !matches!(e, EnqueueError::Invalid { .. }) {
                tracing::warn!(error = %e, "a child of the command was not enqueued");
            }
            refused(e.to_string(), field)
        }
    }
}

fn refused(error: String, field: Option<String>) -> Answer {
    Answer::Refused { error, field }
}
