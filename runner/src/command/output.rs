//! What a command writes: its result on stdout, its log and progress on
//! stderr. Both are read line by line while it runs, so a chatty command
//! never blocks on a full pipe and memory stays bounded by one line.
//! Every line but progress goes to the attempt's log ([`crate::logs`]),
//! not to the runner's console: the log is where a job's output is kept.

use std::io;

use jobs::LogStream;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

/// Where a command's lines go: the attempt's log (`Context::output`).
pub(super) type Output<'a> = &'a (dyn Fn(LogStream, &str) + Sync);

/// A stderr line of this form reports progress:
/// `PROGRESS <percent> [message]`, e.g. `PROGRESS 40 rendering page 2`.
pub const PROGRESS_PREFIX: &str = "PROGRESS ";

/// Longer lines are cut here (the rest of the line is skipped), so one
/// endless line cannot exhaust the machine's memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// How far a command may write ahead of the runner before it blocks.
/// Linux's default pipe holds 64 KiB: a command printing 10 MB then waits
/// for the runner 160 times, each a hand-off between the two processes
/// that costs a scheduling delay on a busy machine. 1 MiB (the default
/// `/proc/sys/fs/pipe-max-size`) makes it 10; the memory is the kernel's,
/// bounded, and only used while the runner is behind.
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Makes the pipe `PIPE_BYTES` large. Where the system allows less, the
/// pipe keeps its size: a slower hand-off, nothing else.
pub(super) fn widen(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl(2) on a descriptor this process owns; F_SETPIPE_SZ
    // takes an int and changes only the pipe's capacity.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
    }
}

/// The last stderr line is kept for the error message; this much of it.
const MAX_ERROR_LINE_CHARS: usize = 500;

/// The latest progress a command reported, not yet recorded.
pub(super) type ProgressUpdate = Option<(u8, String)>;

/// Newline-separated lines of a pipe, without their `\n` or `\r\n`.
struct Lines<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(inner: R) -> Self {
        Self {
            reader: BufReader::with_capacity(64 << 10, inner),
            line: Vec::new(),
        }
    }

    /// The next line, cut at [`MAX_LINE_BYTES`]; `None` at the end.
    async fn next(&mut self) -> io::Result<Option<&[u8]>> {
        self.line.clear();
        let mut read_any = false;
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                break;
            }
            read_any = true;
            let (content, used, ended) = match buf.iter().position(|&b| b == b'\n') {
                Some(end) => (&buf[..end], end + 1, true),
                None => (buf, buf.len(), false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
            self.line
                .extend_from_slice(&content[..content.len().min(room)]);
            self.reader.consume(used);
            if ended {
                break;
            }
        }
        if !read_any {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok(Some(&self.line))
    }
}

/// Reads stdout to its end, every line to the log. Each line that is a
/// JSON value replaces `result`. The last one wins, so a command may print
/// anything before its result.
pub(super) async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    output: Output<'_>,
    result: &mut Option<Value>,
) {
    let mut lines = Lines::new(stdout);
    loop {
        match lines.next().await {
            Ok(Some(line)) => {
                output(LogStream::Stdout, &String::from_utf8_lossy(line));
                if may_be_json(line) {
                    if let Ok(value) = serde_json::from_slice(line) {
                        *result = Some(value);
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading the command's stdout failed");
                break;
            }
        }
    }
}

/// Whether `line` may be a JSON value, by its first byte: most lines of
/// a chatty command are not, and are told apart without a parse.
fn may_be_json(line: &[u8]) -> bool {
    matches!(
        line.trim_ascii_start().first(),
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    )
}

/// Reads stderr to its end: progress lines go to `progress`, the others
/// to the attempt's log; the last of those is kept in `last_line` for the error
/// message. Dropping `progress` at the end tells its reader no more come.
pub(super) async fn read_stderr(
    stderr: impl AsyncRead + Unpin,
    output: Output<'_>,
    progress: watch::Sender<ProgressUpdate>,
    last_line: &mut Option<String>,
) {
    let mut lines = Lines::new(stderr);
    loop {
        match lines.next().await {
            Ok(Some(line)) => {
                let line = String::from_utf8_lossy(line);
                if let Some((percent, message)) = parse_progress(&line) {
                    progress.send_replace(Some((percent, message.to_string())));
                } else {
                    output(LogStream::Stderr, &line);
                    if !line.trim().is_empty() {
                        *last_line = Some(line.chars().take(MAX_ERROR_LINE_CHARS).collect());
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading the command's stderr failed");
                break;
            }
        }
    }
}

/// `PROGRESS <percent> [message]`. The percent may have decimals and is
/// clamped to 0..=100. Anything else is not a progress line (and is
/// logged as it is).
fn parse_progress(line: &str) -> Option<(u8, &str)> {
    let rest = line.strip_prefix(PROGRESS_PREFIX)?.trim_start();
    let (percent, message) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let percent: f64 = percent.parse().ok().filter(|p: &f64| p.is_finite())?;
    // In 0..=100 after the clamp, so the cast cannot truncate.
    Some((percent.clamp(0.0, 100.0).round() as u8, message.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    /// Collects what a reader logs.
    #[derive(Default)]
    struct Logged(Mutex<Vec<(LogStream, String)>>);

    impl Logged {
        fn push(&self, stream: LogStream, line: &str) {
            self.0.lock().unwrap().push((stream, line.to_string()));
        }

        fn lines(&self) -> Vec<(LogStream, String)> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress("PROGRESS 40 rendering page 2"),
            Some((40, "rendering page 2"))
        );
        assert_eq!(parse_progress("PROGRESS 40"), Some((40, "")));
        assert_eq!(parse_progress("PROGRESS 12.6 x "), Some((13, "x")));
        assert_eq!(parse_progress("PROGRESS 250 over"), Some((100, "over")));
        assert_eq!(parse_progress("PROGRESS -3"), Some((0, "")));
        for not in [
            "PROGRESS",
            "PROGRESS abc",
            "PROGRESS NaN",
            "progress 40",
            "40%",
            "PROGRESSING 4",
        ] {
            assert_eq!(parse_progress(not), None, "{not}");
        }
    }

    #[tokio::test]
    async fn the_last_json_line_is_the_result() {
        let stdout =
            b"starting\n{\"partial\": true}\nnot json {\n{\"done\": 1}\r\nbye\n" as &[u8];
        let mut result = None;
        let logged = Logged::default();
        read_stdout(stdout, &|s, l| logged.push(s, l), &mut result).await;
        assert_eq!(result, Some(json!({"done": 1})));
        assert_eq!(
            logged.lines(),
            [
                "starting",
                "{\"partial\": true}",
                "not json {",
                "{\"done\": 1}",
                "bye"
            ]
            .map(|l| (LogStream::Stdout, l.to_string())),
            "every line is logged, results too"
        );

        let mut result = None;
        read_stdout(b"[1, 2]" as &[u8], &|_, _| {}, &mut result).await;
        assert_eq!(
            result,
            Some(json!([1, 2])),
            "the last line needs no newline"
        );

        let mut result = None;
        read_stdout(b"only text\n" as &[u8], &|_, _| {}, &mut result).await;
        assert_eq!(result, None);
    }

    #[tokio::test]
    async fn stderr_splits_progress_from_log_lines() {
        let stderr = b"hello\nPROGRESS 10 a\nPROGRESS 20 b\nboom: it broke\n\n" as &[u8];
        let (tx, mut rx) = watch::channel(None);
        let mut last = None;
        let logged = Logged::default();
        read_stderr(stderr, &|s, l| logged.push(s, l), tx, &mut last).await;
        assert_eq!(last.as_deref(), Some("boom: it broke"));
        assert_eq!(
            logged.lines(),
            ["hello", "boom: it broke", ""].map(|l| (LogStream::Stderr, l.to_string())),
            "progress lines are not logged"
        );
        assert_eq!(*rx.borrow_and_update(), Some((20, "b".to_string())));
        assert!(
            rx.changed().await.is_err(),
            "the sender is dropped at the end"
        );
    }

    #[tokio::test]
    async fn long_lines_are_cut() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nnext\n");
        let mut lines = Lines::new(input.as_slice());
        assert_eq!(lines.next().await.unwrap().unwrap().len(), MAX_LINE_BYTES);
        assert_eq!(lines.next().await.unwrap().unwrap(), b"next");
        assert!(lines.next().await.unwrap().is_none());
    }
}
