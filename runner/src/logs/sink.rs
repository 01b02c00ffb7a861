//! [`LogSink`]: where an attempt's lines go, and the shipper task that
//! sends them to the store.
//!
//! The job never waits for the store: [`LogSink::push`] only appends to an
//! in-memory batch under a short lock. The buffer is bounded
//! ([`LogSettings::buffer_bytes`]); while it is full (the store is slow or
//! down) new lines are dropped and counted, and the count is stored with
//! the next batch. One shipper per attempt sends whatever is buffered
//! every [`FLUSH_EVERY`], or at once when [`BATCH_BYTES`] are waiting, so
//! the store commands per attempt are bounded by time and size, not by
//! lines.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jobs::{Appended, AttemptRef, LogBatch, LogEncoder, LogStream, Store};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{LogSettings, Masker, BATCH_BYTES, FLUSH_EVERY};

/// Where one attempt's lines go. Cheap to clone.
#[derive(Clone)]
pub struct LogSink(Arc<Shared>);

struct Shared {
    buffer: Mutex<Buffer>,
    /// Wakes the shipper early: a full batch, or the end.
    wake: Notify,
    /// No more lines are wanted: the log reached its cap (as counted here,
    /// or as the store answered) or the attempt is stale. Later lines are
    /// discarded without counting as dropped, and cost no encoding.
    refused: AtomicBool,
    /// The attempt's cap, as the store counts it (stored entries).
    max_bytes: u64,
    max_line_bytes: usize,
    buffer_bytes: usize,
    masker: Masker,
}

struct Buffer {
    batch: LogBatch,
    encoder: LogEncoder,
    /// Lines dropped because the buffer was full, since the start.
    dropped: u64,
    /// Bytes of the lines accepted since the start and not dropped since:
    /// what the store holds once they are shipped.
    accepted: u64,
    /// The attempt is over: ship what is left, then stop.
    closing: bool,
}

/// What a shipper did, for the runner's own log line at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shipped {
    pub lines: u64,
    pub bytes: u64,
    pub batches: u64,
    pub dropped: u64,
    pub truncated: bool,
}

/// The running shipper of a [`LogSink`]; [`Shipper::finish`] flushes.
pub struct Shipper {
    sink: LogSink,
    task: JoinHandle<Shipped>,
}

impl LogSink {
    /// A sink for `attempt` and its shipper, which runs until
    /// [`Shipper::finish`].
    pub fn start(store: Store, attempt: AttemptRef, settings: LogSettings) -> (Self, Shipper) {
        let sink = Self(Arc::new(Shared {
            buffer: Mutex::new(Buffer {
                batch: LogBatch::new(),
                encoder: LogEncoder::default(),
                dropped: 0,
                accepted: 0,
                closing: false,
            }),
            wake: Notify::new(),
            refused: AtomicBool::new(false),
            max_bytes: settings.max_bytes,
            max_line_bytes: settings.max_line_bytes,
            buffer_bytes: settings.buffer_bytes,
            masker: Masker::new(settings.secrets),
        }));
        let task = tokio::spawn(ship(sink.clone(), store, attempt, settings.max_bytes));
        (sink.clone(), Shipper { sink, task })
    }

    /// Adds a line: masked, cut at the line cap, stamped with the time.
    /// Never waits for the store.
    pub fn push(&self, stream: LogStream, line: &str) {
        // Past the cap, a flood costs no encoding.
        if self.refused() {
            return;
        }
        let masked = self.0.masker.mask(line);
        let line = cut(&masked, self.0.max_line_bytes);
        // Straight from the clock: a flood stamps tens of thousands of lines.
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        let mut buffer = self.lock();
        if buffer.closing {
            return;
        }
        // Encoded under the lock: the encoder's shared blocks are the
        // buffer's, and the lock is only contended by the shipper taking
        // a batch.
        let entry = buffer.encoder.encode(ts, stream, &line);
        if buffer.batch.bytes() + entry.bytes() > self.0.buffer_bytes {
            buffer.dropped += 1;
            return;
        }
        buffer.accepted += entry.bytes() as u64;
        buffer.batch.push(entry);
        if buffer.accepted > self.0.max_bytes {
            // This line crosses the cap: the store keeps what fits and ends
            // the log with its marker, and would discard every later line.
            // Stop encoding them here instead of shipping them to be
            // discarded (a flood's cost is then only reading the pipe).
            self.0.refused.store(true, Ordering::Relaxed);
            self.0.wake.notify_one();
        } else if buffer.batch.bytes() >= BATCH_BYTES {
            self.0.wake.notify_one();
        }
    }

    /// [`LogSink::push`] for a line as a pipe gave it (invalid UTF-8 is
    /// replaced). Past the cap it costs not even the UTF-8 check.
    pub fn push_bytes(&self, stream: LogStream, line: &[u8]) {
        if !self.refused() {
            self.push(stream, &String::from_utf8_lossy(line));
        }
    }

    fn refused(&self) -> bool {
        self.0.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self) {
        self.0.refused.store(true, Ordering::Relaxed);
        self.lock().batch = LogBatch::new();
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A panic while holding the lock leaves a consistent buffer.
        self.0.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shipper {
    /// Ships what is left and stops, waiting at most `within` (the store
    /// may be down; the attempt must still end).
    pub async fn finish(self, within: Duration) -> Option<Shipped> {
        self.sink.lock().closing = true;
        self.sink.0.wake.notify_one();
        let abort = self.task.abort_handle();
        match tokio::time::timeout(within, self.task).await {
            Ok(Ok(shipped)) => Some(shipped),
            Ok(Err(_)) => None,
            Err(_) => {
                abort.abort();
                None
            }
        }
    }
}

/// The shipper: one store command per batch, one batch at a time. A
/// batch the store refused for an error is kept and sent again with the
/// next lines (the buffer bound still holds: new lines are dropped while
/// it is full).
async fn ship(sink: LogSink, store: Store, attempt: AttemptRef, max_bytes: u64) -> Shipped {
    let mut shipped = Shipped::default();
    let mut pending = LogBatch::new();
    let mut reported_dropped = 0;
    loop {
        let closing = sink.lock().closing;
        if !closing {
            tokio::select! {
                () = sink.0.wake.notified() => {}
                () = tokio::time::sleep(FLUSH_EVERY) => {}
            }
        }
        let (batch, dropped, closing) = {
            let mut buffer = sink.lock();
            (
                std::mem::take(&mut buffer.batch),
                buffer.dropped,
                buffer.closing,
            )
        };
        pending.append(batch);
        shipped.dropped = dropped;
        if pending.is_empty() && dropped == reported_dropped {
            if closing {
                return shipped;
            }
            continue;
        }
        match store
            .append_log(&attempt, &pending, max_bytes, dropped)
            .await
        {
            Ok(Appended::Stored { truncated }) => {
                shipped.lines += pending.len() as u64;
                shipped.bytes += pending.bytes() as u64;
                shipped.batches += 1;
                reported_dropped = dropped;
                pending = LogBatch::new();
                if truncated {
                    shipped.truncated = true;
                    sink.refuse();
                    return shipped;
                }
            }
            Ok(Appended::Stale) => {
                sink.refuse();
                return shipped;
            }
            Err(e) => {
                tracing::warn!(error = %e, lines = pending.len(), "could not ship log lines; keeping them for the next try");
                if pending.bytes() > sink.0.buffer_bytes {
                    let mut buffer = sink.lock();
                    buffer.dropped += pending.len() as u64;
                    // Never stored: the cap counts from what was.
                    buffer.accepted -= pending.bytes() as u64;
                    sink.0
                        .refused
                        .store(buffer.accepted > sink.0.max_bytes, Ordering::Relaxed);
                    pending = LogBatch::new();
                }
                if closing {
                    tokio::time::sleep(FLUSH_EVERY).await;
                }
            }
        }
    }
}

/// `line`, cut to at most `max` bytes (on a character boundary) plus a
/// note of how much was cut.
fn cut(line: &str, max: usize) -> Cow<'_, str> {
    if line.len() <= max {
        return Cow::Borrowed(line);
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… [{} bytes cut]",
        &line[..end],
        line.len() - end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdef", 3), "abc… [3 bytes cut]");
        // "é" is two bytes: the cut may not split it.
        assert_eq!(cut("aé", 2), "a… [2 bytes cut]");
    }
}
