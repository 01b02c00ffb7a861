//! `GET /jobs/{id}/logs`: what a job's attempts printed ([`jobs::logs`]).
//!
//! Pages of lines from a cursor (`{attempt}:{line}`, the `x-next-cursor`
//! header of the previous page), as plain text or JSON lines; or, with
//! `follow=true`, Server-Sent Events that go on until the attempt (or,
//! without `attempt`, the job) ends. Each event's `id` is the cursor
//! after its line, so a reconnecting `EventSource` resumes where it was.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use jobs::{Job, JobId, LogCursor, LogLine};
use serde::{Deserialize, Serialize};

use super::jobs::{find, parse_id, unprocessable};
use super::{ApiError, AppState};

pub const DEFAULT_LOG_LIMIT: usize = 1000;
pub const MAX_LOG_LIMIT: usize = 10_000;
/// A follower with nothing new looks again after this; with the runner's
/// 200 ms batches a line shows within about half a second of being printed.
const FOLLOW_POLL: Duration = Duration::from_millis(150);
/// The header naming where the next page starts.
pub const NEXT_CURSOR: &str = "x-next-cursor";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this attempt (from 1); all attempts in order when absent.
    attempt: Option<u32>,
    /// Start here: `{attempt}:{line}` from a previous page's
    /// `x-next-cursor` header (or an SSE event's id).
    cursor: Option<String>,
    /// Lines per page (default 1000, at most 10000).
    limit: Option<usize>,
    /// `text` (default) or `jsonl`; also chosen by `Accept`
    /// (`application/x-ndjson`, `application/jsonl`).
    format: Option<String>,
    /// Server-Sent Events (`line` events, then one `end`) until the
    /// attempt, or the job, ends.
    follow: Option<bool>,
}

/// One line as `format=jsonl` and the `line` events show it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    pub attempt: u32,
    /// The line's number within its attempt, from 0.
    pub index: u64,
    pub ts: chrono::DateTime<chrono::Utc>,
    #[schema(value_type = String)]
    pub stream: jobs::LogStream,
    pub line: String,
}

impl LogEntry {
    pub fn new(at: LogCursor, line: LogLine) -> Self {
        Self {
            attempt: at.attempt,
            index: at.index,
            ts: line.ts,
            stream: line.stream,
            line: line.line,
        }
    }

    /// `2026-01-02T03:04:05.678Z [1 stdout] the line`.
    pub fn text(&self) -> String {
        format!(
            "{} [{} {}] {}\n",
            self.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.attempt,
            self.stream,
            self.line
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    JsonLines,
}

/// The request, parsed.
struct Request {
    id: JobId,
    only: Option<u32>,
    from: LogCursor,
    limit: usize,
}

/// `GET /jobs/{id}/logs`.
#[utoipa::path(get, path = "/jobs/{id}/logs", tag = "jobs",
    params(("id" = String, Path, description = "job id"), LogsQuery),
    responses(
        (status = 200, description = "a page of lines (`x-next-cursor` says where the next starts): `text/plain`, `application/x-ndjson` of LogEntry, or with `follow=true` a `text/event-stream` of `line` events (LogEntry) and one `end`",
            content((String = "text/plain"), (LogEntry = "application/x-ndjson"), (LogEntry = "text/event-stream"))),
        (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let format = format_of(query.format.as_deref(), &headers)?;
    let limit = query.limit.unwrap_or(DEFAULT_LOG_LIMIT);
    if limit == 0 || limit > MAX_LOG_LIMIT {
        return Err(unprocessable(
            "limit",
            format!("must be 1 to {MAX_LOG_LIMIT}"),
        ));
    }
    let job = find(&state, id).await?;
    let attempts = job.attempts.last().map_or(0, |a| a.number);
    if let Some(n) = query.attempt {
        if n == 0 || n > attempts {
            return Err(unprocessable(
                "attempt",
                format!("the job has attempts 1 to {attempts}; no attempt {n}"),
            ));
        }
    }
    // An EventSource reconnecting sends the last id it saw.
    let cursor = query.cursor.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let from = match cursor {
        Some(c) => c.parse().map_err(|e| unprocessable("cursor", e))?,
        None => LogCursor::start_of(query.attempt.unwrap_or(1)),
    };
    if query.attempt.is_some_and(|n| n != from.attempt) {
        return Err(unprocessable(
            "cursor",
            "points into another attempt than `attempt`".into(),
        ));
    }
    let request = Request {
        id,
        only: query.attempt,
        from,
        limit,
    };
    if query.follow.unwrap_or(false) {
        return Ok(follow(state, request).into_response());
    }
    let (entries, next) = page(&state, &job, &request).await?;
    let (content_type, body) = match format {
        Format::Text => (
            "text/plain; charset=utf-8",
            entries.iter().map(LogEntry::text).collect::<String>(),
        ),
        Format::JsonLines => (
            "application/x-ndjson",
            entries
                .iter()
                .map(|e| serde_json::to_string(e).expect("an entry serializes") + "\n")
                .collect(),
        ),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    headers.insert(
        NEXT_CURSOR,
        HeaderValue::from_str(&next.to_string()).expect("a cursor is ASCII"),
    );
    Ok(response)
}

fn format_of(format: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
    match format {
        Some("text") => Ok(Format::Text),
        Some("jsonl") => Ok(Format::JsonLines),
        Some(other) => Err(unprocessable(
            "format",
            format!("{other:?} is not a format; use text or jsonl"),
        )),
        None => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let json = [
                "application/x-ndjson",
                "application/jsonl",
                "application/json",
            ]
            .iter()
            .any(|mime| accept.contains(mime));
            Ok(if json {
                Format::JsonLines
            } else {
                Format::Text
            })
        }
    }
}

/// Up to `limit` lines from `from`, moving on to the next attempt once one
/// is read to its end and a later one exists. Returns them and the cursor
/// after the last.
async fn page(
    state: &AppState,
    job: &Job,
    request: &Request,
) -> Result<(Vec<LogEntry>, LogCursor), ApiError> {
    let last = request
        .only
        .unwrap_or_else(|| job.attempts.last().map_or(0, |a| a.number));
    let mut at = request.from;
    let mut entries = Vec::new();
    while at.attempt <= last && entries.len() < request.limit {
        let want = request.limit - entries.len();
        let lines = state.store.read_log(request.id, at, want).await?;
        let exhausted = lines.len() < want;
        for line in lines {
            entries.push(LogEntry::new(at, line));
            at.index += 1;
        }
        if !exhausted || at.attempt >= last {
            break;
        }
        at = LogCursor::start_of(at.attempt + 1);
    }
    Ok((entries, at))
}

/// Whether no more lines can come for `request`: its attempt has ended,
/// or (all attempts) the job has.
fn ended(job: &Job, request: &Request) -> bool {
    match request.only {
        Some(n) => job
            .attempts
            .iter()
            .any(|a| a.number == n && a.outcome.is_some()),
        None => job.status.is_terminal(),
    }
}

/// The `follow=true` stream. Reads until a page comes back empty, then
/// checks whether the attempt ended; if so, one more read (lines shipped
/// just before the end) and the `end` event.
fn follow(state: AppState, request: Request) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Follow {
        state: AppState,
        request: Request,
        done: bool,
        ending: bool,
    }
    let start = Follow {
        state,
        request,
        done: false,
        ending: false,
    };
    // Each step yields the events of one read.
    let steps = futures::stream::unfold(start, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            let job = match f.state.store.get(f.request.id).await {
                Ok(Some(job)) => job,
                // Purged or unreachable: nothing more to follow.
                _ => {
                    f.done = true;
                    return Some((vec![end_event(None)], f));
                }
            };
            let page = page(&f.state, &job, &f.request).await;
            let Ok((entries, next)) = page else {
                tokio::time::sleep(FOLLOW_POLL).await;
                continue;
            };
            f.request.from = next;
            if !entries.is_empty() {
                return Some((entries.iter().map(line_event).collect(), f));
            }
            if f.ending {
                f.done = true;
                return Some((vec![end_event(Some(&job))], f));
            }
            if ended(&job, &f.request) {
                f.ending = true;
                continue;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    let events =
        steps.flat_map(|events: Vec<Event>| futures::stream::iter(events.into_iter().map(Ok)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn line_event(entry: &LogEntry) -> Event {
    let next = LogCursor {
        attempt: entry.attempt,
        index: entry.index + 1,
    };
    Event::default()
        .event("line")
        .id(next.to_string())
        .json_data(entry)
        .expect("an entry serializes")
}

fn end_event(job: Option<&Job>) -> Event {
    let status = job.map(|j| j.status.as_str());
    Event::default()
        .event("end")
        .json_data(serde_json::json!({ "status": status }))
        .expect("json serializes")
}
