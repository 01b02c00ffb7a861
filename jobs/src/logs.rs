//! Per-attempt logs: what a job printed, kept with the job.
//!
//! ## Layout
//! | key | type | what |
//! | --- | --- | --- |
//! | `log:{id}:{attempt}` | list | one JSON [`LogLine`] per entry, oldest first |
//! | `job:{id}` fields `a:{n}:log_*` | hash fields | the attempt's [`LogSummary`] and `log_tail` |
//!
//! The runner appends in batches ([`Store::append_log`], one script call
//! per batch, fenced by the attempt's token); the store enforces the
//! attempt's byte cap and ends a capped log with one `system` line saying
//! so. `purge` removes the lists with their job, so logs live exactly as
//! long as the job record. Readers page by [`LogCursor`].

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use fred::bytes::{BufMut, Bytes, BytesMut};
use fred::prelude::*;
use fred::types::scripts::Script;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::JobId;
use crate::store::{with_prelude, AttemptRef, Result, Store, StoreError};

/// Lines of the end of a log kept on the job record ([`LogSummary`]'s
/// neighbour `log_tail`), for the job view, dead letters and callbacks.
pub const TAIL_LINES: usize = 10;
/// Each tail line is cut to this many bytes.
pub const TAIL_CHARS: usize = 300;

static APPEND_LOG: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/append_log.lua")));

/// Where a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// A command's standard output.
    Stdout,
    /// A command's standard error.
    Stderr,
    /// A Rust handler's `tracing` events and `ctx.log(..)` lines, and the
    /// runner's own lines about the attempt.
    Log,
    /// The store's own notes, e.g. that the log reached its cap.
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Log => "log",
            Self::System => "system",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an attempt's log, as stored: `{"ts": <unix ms>, "stream":
/// .., "line": ..}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub ts: DateTime<Utc>,
    pub stream: LogStream,
    pub line: String,
}

/// How much an attempt logged, as the job view shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogSummary {
    /// Lines stored (the truncation marker included).
    pub lines: u64,
    /// Bytes stored, counted as stored (JSON entries).
    pub bytes: u64,
    /// Whether the log reached the attempt's cap.
    #[serde(default)]
    pub truncated: bool,
    /// Lines the runner dropped because the store could not keep up.
    #[serde(default)]
    pub dropped: u64,
    /// Store commands the runner spent on this log (its batches).
    #[serde(default)]
    pub batches: u64,
}

/// One [`LogLine`] encoded for the store: its JSON, in bytes shared with
/// the other entries its [`LogEncoder`] wrote, so a batch of thousands
/// costs a few allocations and goes to the store without a copy.
#[derive(Clone, Debug)]
pub struct LogEntry(Bytes);

impl LogEntry {
    /// One line, on its own (a writer of many uses one [`LogEncoder`]).
    pub fn new(line: &LogLine) -> Self {
        LogEncoder::default().encode(line.ts.timestamp_millis(), line.stream, &line.line)
    }

    /// Its size as stored.
    pub fn bytes(&self) -> usize {
        self.0.len()
    }
}

/// Writes [`LogEntry`]s into shared blocks of [`LogEncoder::BLOCK`] bytes:
/// one allocation per block instead of one (and a copy) per line. A block
/// is freed once every entry in it is shipped, so memory stays bounded by
/// the lines held plus one block.
#[derive(Debug, Default)]
pub struct LogEncoder {
    block: BytesMut,
}

impl LogEncoder {
    pub const BLOCK: usize = 64 << 10;

    /// `{"ts":<unix ms>,"stream":..,"line":..}`, exactly as serde writes a
    /// [`LogLine`] (a test holds the two together).
    pub fn encode(&mut self, ts_ms: i64, stream: LogStream, line: &str) -> LogEntry {
        // JSON escaping writes at most six bytes per byte (`\u001f`).
        let most = line.len() * 6 + 64;
        if self.block.capacity() < most {
            self.block = BytesMut::with_capacity(most.max(Self::BLOCK));
        }
        let block = &mut self.block;
        let _ = write!(block, r#"{{"ts":{ts_ms},"stream":"{stream}","line":"#);
        serde_json::to_writer(block.writer(), line).expect("a str always serializes");
        self.block.put_u8(b'}');
        LogEntry(self.block.split().freeze())
    }
}

/// A batch of lines for [`Store::append_log`].
#[derive(Clone, Debug, Default)]
pub struct LogBatch {
    entries: Vec<LogEntry>,
    bytes: usize,
}

impl LogBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, entry: LogEntry) {
        self.bytes += entry.bytes();
        self.entries.push(entry);
    }

    /// Moves `later`'s lines to the end of this batch.
    pub fn append(&mut self, later: LogBatch) {
        self.bytes += later.bytes;
        self.entries.extend(later.entries);
    }

    /// The batch's size as stored.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What [`Store::append_log`] did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored; `truncated` once the attempt's cap is reached (then later
    /// batches are not stored: stop sending them).
    Stored { truncated: bool },
    /// The attempt is no longer the job's current one (or the job is
    /// gone): nothing was stored.
    Stale,
}

/// A position in a job's logs: line `index` (from 0) of `attempt`.
/// Written `{attempt}:{index}`, e.g. `2:150`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogCursor {
    pub attempt: u32,
    pub index: u64,
}

impl LogCursor {
    /// The first line of `attempt`.
    pub fn start_of(attempt: u32) -> Self {
        Self { attempt, index: 0 }
    }
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.attempt, self.index)
    }
}

impl FromStr for LogCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a cursor (`<attempt>:<line>`, e.g. `1:200`)");
        let (attempt, index) = s.split_once(':').ok_or_else(bad)?;
        let attempt = attempt.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?;
        let index = index.parse().map_err(|_| bad())?;
        Ok(Self { attempt, index })
    }
}

/// The named params of `append_log.lua`.
#[derive(Serialize)]
struct AppendParams<'a> {
    id: String,
    attempt: u32,
    token: &'a str,
    max_bytes: u64,
    dropped: u64,
    tail_lines: usize,
    tail_chars: usize,
}

#[derive(Deserialize)]
struct AppendAnswer {
    #[serde(default)]
    stale: bool,
    #[serde(default)]
    truncated: bool,
}

impl Store {
    /// Appends a batch to the attempt's log, if the attempt is still the
    /// job's latest (its token decides, whatever the job's status: the
    /// runner flushes after a stop request too). `max_bytes` caps the
    /// whole log; `dropped` is how many lines the runner dropped so far.
    pub async fn append_log(
        &self,
        a: &AttemptRef,
        batch: &LogBatch,
        max_bytes: u64,
        dropped: u64,
    ) -> Result<Appended> {
        let params = AppendParams {
            id: a.job_id.to_string(),
            attempt: a.attempt,
            token: &a.token,
            max_bytes,
            dropped,
            tail_lines: TAIL_LINES,
            tail_chars: TAIL_CHARS,
        };
        let mut args: Vec<fred::types::Value> = Vec::with_capacity(batch.entries.len() + 1);
        args.push(serde_json::to_string(&params)?.into());
        args.extend(batch.entries.iter().map(|e| e.0.clone().into()));
        let text: String = self.run(&APPEND_LOG, args).await?;
        let answer: AppendAnswer = serde_json::from_str(&text)?;
        Ok(if answer.stale {
            Appended::Stale
        } else {
            Appended::Stored {
                truncated: answer.truncated,
            }
        })
    }

    /// Up to `limit` lines of one attempt's log from `from.index` on.
    pub async fn read_log(&self, id: JobId, from: LogCursor, limit: usize) -> Result<Vec<LogLine>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = from.index as i64;
        let entries: Vec<String> = self
            .client
            .lrange(
                self.log_key(id, from.attempt),
                start,
                start + limit as i64 - 1,
            )
            .await?;
        entries
            .iter()
            .map(|e| serde_json::from_str(e).map_err(StoreError::from))
            .collect()
    }

    /// How many lines the attempt's log has.
    pub async fn log_len(&self, id: JobId, attempt: u32) -> Result<u64> {
        Ok(self.client.llen(self.log_key(id, attempt)).await?)
    }

    fn log_key(&self, id: JobId, attempt: u32) -> String {
        self.key(&format!("log:{id}:{attempt}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back() {
        let c: LogCursor = "2:150".parse().unwrap();
        assert_eq!(
            c,
            LogCursor {
                attempt: 2,
                index: 150
            }
        );
        assert_eq!(c.to_string(), "2:150");
        for bad in ["", "2", "0:1", "a:1", "1:-1", "1:x"] {
            assert!(bad.parse::<LogCursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_line_is_stored_as_compact_json() {
        let line = LogLine {
            ts: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            stream: LogStream::Stderr,
            line: "hi".into(),
        };
        let entry = LogEntry::new(&line);
        assert_eq!(
            entry.0,
            r#"{"ts":1700000000123,"stream":"stderr","line":"hi"}"#
        );
        // The hand-written encoding is serde's, whatever the line holds.
        let mut encoder = LogEncoder::default();
        for text in [
            "",
            "tab\t \"quoted\" \\ é \u{1f}",
            &"x".repeat(LogEncoder::BLOCK),
        ] {
            let line = LogLine {
                line: text.to_string(),
                ..line.clone()
            };
            let entry = encoder.encode(line.ts.timestamp_millis(), line.stream, text);
            assert_eq!(entry.0, serde_json::to_string(&line).unwrap());
        }
        let mut batch = LogBatch::new();
        batch.push(entry.clone());
        batch.append(batch.clone());
        assert_eq!((batch.len(), batch.bytes()), (2, 2 * entry.bytes()));
    }
}
