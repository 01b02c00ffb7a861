//! How a command enqueues child jobs and batches: a line protocol on a
//! unix socket the runner listens on for the attempt, named by
//! `JOB_CHILDREN_SOCKET` in the command's environment. The socket reaches
//! only this runner, which validates and stores each child and batch
//! exactly as [`crate::Context::enqueue`] and
//! [`crate::Context::enqueue_batch`] do: the command never holds the
//! store's URL or the attempt's token.
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
//! > {"key": "pages", "batch": {"jobs": [{"kind": "resize"}, {"kind": "resize"}], "then": {"kind": "zip"}}}
//! < {"batch_id": "0190...", "key": "pages", "existing": false}
//! > {"batch": {"jobs": [{"kind": "resize"}, {"kind": "Bad"}]}}
//! < {"error": "invalid child job: jobs[1].kind: ...", "field": "jobs[1].kind"}
//! ```
//!
//! `job` is a `POST /jobs` body, `batch` a `POST /batches` body; a line
//! has one of them. Without `key`, the key is `#n` in the order the
//! runner receives unkeyed requests, counted apart for children and
//! batches (send them one at a time, or give keys). `existing: true`
//! means an earlier attempt of this job already enqueued the child (or
//! batch) under that key.

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
/// closed): a batch's request is a `POST /batches` body, at most about
/// that (the dispatchers' default `BATCH_BODY_LIMIT_BYTES`).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The socket of one attempt; removed when dropped.
pub(crate) struct ChildSocket {
    pub(crate) path: PathBuf,
    server: JoinHandle<()>,
}

impl ChildSocket {
    /// Listens for `ctx`'s attempt, in the temporary directory (private
    /// to the machine). Named by this process and a count of the sockets
    /// it opened: one process may run several attempts at once (virtual
    /// machines run in-process, and so do tests), and a name by attempt
    /// number alone let two of them take each other's socket. Short, as
    /// a socket's path must be.
    pub(crate) fn open(ctx: &Context) -> std::io::Result<Self> {
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("job-children-{}-{n}.sock", std::process::id()));
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
    #[serde(default)]
    job: Option<Value>,
    #[serde(default)]
    batch: Option<Value>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Enqueued {
        #[serde(flatten)]
        id: Enqueued,
        key: String,
        existing: bool,
    },
    Refused {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}

/// What was enqueued: a child's id is `id`, a batch's `batch_id`.
#[derive(Serialize)]
enum Enqueued {
    #[serde(rename = "id")]
    Job(String),
    #[serde(rename = "batch_id")]
    Batch(String),
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
    const SHAPE: &str = r#"{"key": .., "job": {..}} or {"key": .., "batch": {..}}"#;
    let request: Request = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => return refused(format!("not a request line ({SHAPE}): {e}"), None),
    };
    let (is_job, body) = match (request.job, request.batch) {
        (Some(job), None) => (true, job),
        (None, Some(batch)) => (false, batch),
        _ => return refused(format!("give job or batch, one of them ({SHAPE})"), None),
    };
    let key = match request.key {
        Some(key) => key,
        None if is_job => ctx.next_child_key(),
        None => ctx.next_batch_key(),
    };
    let enqueued = if is_job {
        let child = ctx.enqueue_keyed(&key, body).await;
        child.map(|c| (Enqueued::Job(c.id.to_string()), c.existing))
    } else {
        let batch = ctx.enqueue_batch_keyed(&key, body).await;
        batch.map(|b| (Enqueued::Batch(b.id.to_string()), b.existing))
    };
    match enqueued {
        Ok((id, existing)) => Answer::Enqueued { id, key, existing },
        Err(e) => {
            let field = e.field().map(str::to_string);
            if !matches!(e, EnqueueError::Invalid { .. }) {
                tracing::warn!(error = %e, "a child (or batch) of the command was not enqueued");
            }
            refused(e.to_string(), field)
        }
    }
}

fn refused(error: String, field: Option<String>) -> Answer {
    Answer::Refused { error, field }
}
