//! What a command writes: its result on stdout, its log and progress on
//! stderr. Both are read line by line while it runs, so a chatty command
//! never blocks on a full pipe and memory stays bounded by one line.
//! Every line but progress goes to the attempt's log ([`crate::logs`]),
//! not to the runner's console: the log is where a job's output is kept.

use std::io;

use jobs::LogStream;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

/// Where a command's lines go: the attempt's log (`Context::output`).
pub(super) type Output<'a> = &'a (dyn Fn(LogStream, &[u8]) + Sync);

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
/// pipe keeps its size: a slower hand-off, nothing else. Returns whether
/// it is that large (then reading may pause: see [`NAP`]).
pub(super) fn widen(pipe: &impl std::os::fd::AsRawFd) -> bool {
    // SAFETY: fcntl(2) on a descriptor this process owns; F_SETPIPE_SZ
    // takes an int and changes only the pipe's capacity.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) >= PIPE_BYTES }
}

/// While a command floods its pipe, the runner pauses this long after
/// emptying it, instead of waking at every write. Each wake-up costs the
/// command too (its write wakes the runner, a cross-CPU wake-up), and
/// reading at once after draining gets a few KiB at a time: a 10 MB flood
/// woke the runner about a thousand times. In a pause the command writes
/// ahead into the 1 MiB pipe (a few hundred KiB at 150 MB/s) without ever
/// blocking, and the next read takes it in one go. Lines reach the log a
/// millisecond or two later.
const NAP: std::time::Duration = std::time::Duration::from_millis(1);

/// A read this large that emptied the pipe means output comes in blocks
/// (a buffered writer flooding: Python's and C's stdio write 4 to 8 KiB
/// at a time); a command printing a line now and then gets no pause.
const FLOOD_READ: usize = 4 << 10;

/// The last stderr line is kept for the error message; this much of it.
const MAX_ERROR_LINE_CHARS: usize = 500;

/// The latest progress a command reported, not yet recorded.
pub(super) type ProgressUpdate = Option<(u8, String)>;

/// How much of a pipe is read at once. Lines are split in bulk out of
/// these chunks (a 10 MB flood is about 40 reads, not one call per line),
/// and a line is copied only when it straddles two reads.
const CHUNK_BYTES: usize = 256 << 10;

/// Newline-separated lines of a pipe, without their `\n` or `\r\n`.
struct Lines {
    /// `None` only while pausing: see [`Lines::pause`].
    pipe: Option<pipe::Receiver>,
    buf: Vec<u8>,
    /// `buf[start..end]` is read and not yet returned.
    start: usize,
    end: usize,
    /// The current line was cut at [`MAX_LINE_BYTES`]: skip to its end.
    skipping: bool,
    /// Pause before reading again ([`NAP`]): the last read emptied a wide
    /// pipe that a flood is filling.
    nap: bool,
    /// The pipe is wide enough to pause ([`widen`]).
    wide: bool,
}

impl Lines {
    fn new(pipe: pipe::Receiver, wide: bool) -> Self {
        Self {
            pipe: Some(pipe),
            nap: false,
            wide,
            // Zeroed pages are mapped lazily: an unused pipe costs nothing.
            buf: vec![0; CHUNK_BYTES],
            start: 0,
            end: 0,
            skipping: false,
        }
    }

    /// The next line, cut at [`MAX_LINE_BYTES`]; `None` at the end.
    async fn next(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(at) = memchr::memchr(b'\n', unread) {
                let line = self.start..self.start + at;
                self.start += at + 1;
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                return Ok(Some(trim_cr(&self.buf[line])));
            }
            if self.skipping {
                self.start = self.end;
            } else if unread.len() >= MAX_LINE_BYTES {
                let line = self.start..self.start + MAX_LINE_BYTES;
                self.start = self.end;
                self.skipping = true;
                return Ok(Some(&self.buf[line]));
            }
            // Room for more: the partial line moves to the front, and the
            // buffer grows only for a line longer than a chunk.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            if std::mem::take(&mut self.nap) {
                self.pause().await?;
            }
            let room = self.buf.len() - self.end;
            let pipe = self.pipe.as_mut().expect("only taken while pausing");
            let read = pipe.read(&mut self.buf[self.end..]).await?;
            self.nap = self.wide && (FLOOD_READ..room).contains(&read);
            if read == 0 {
                let rest = 0..std::mem::take(&mut self.end);
                if rest.is_empty() || std::mem::take(&mut self.skipping) {
                    return Ok(None);
                }
                return Ok(Some(trim_cr(&self.buf[rest])));
            }
            self.end += read;
        }
    }

    /// Waits [`NAP`] with the pipe out of tokio's reactor. Registered, a
    /// pipe wakes the reactor's thread at every write of the command
    /// (Linux wakes a polled pipe's waiters on each write): a futile
    /// wake-up per 8 KiB a Python command writes, paid by the command as
    /// much as by the runner. Out of it, writes only fill the pipe.
    async fn pause(&mut self) -> io::Result<()> {
        let fd = self
            .pipe
            .take()
            .expect("only taken while pausing")
            .into_nonblocking_fd()?;
        tokio::time::sleep(NAP).await;
        self.pipe = Some(pipe::Receiver::from_owned_fd(fd)?);
        Ok(())
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads stdout to its end, every line to the log. Each line that is a
/// JSON value replaces `result`. The last one wins, so a command may print
/// anything before its result.
pub(super) async fn read_stdout(
    stdout: pipe::Receiver,
    wide: bool,
    output: Output<'_>,
    result: &mut Option<Value>,
) {
    let mut lines = Lines::new(stdout, wide);
    loop {
        match lines.next().await {
            Ok(Some(line)) => {
                output(LogStream::Stdout, line);
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
/// message ([`error_line`]). Dropping `progress` at the end tells its reader no more come.
pub(super) async fn read_stderr(
    stderr: pipe::Receiver,
    wide: bool,
    output: Output<'_>,
    progress: watch::Sender<ProgressUpdate>,
    last_line: &mut Vec<u8>,
) {
    let mut lines = Lines::new(stderr, wide);
    loop {
        match lines.next().await {
            Ok(Some(line)) => {
                let progressed = line.starts_with(PROGRESS_PREFIX.as_bytes())
                    && parse_progress(&String::from_utf8_lossy(line))
                        .map(|(percent, message)| {
                            progress.send_replace(Some((percent, message.to_string())));
                        })
                        .is_some();
                if progressed {
                    continue;
                }
                output(LogStream::Stderr, line);
                if !line.trim_ascii().is_empty() {
                    // Reused: a flood on stderr allocates nothing per line.
                    last_line.clear();
                    last_line.extend_from_slice(&line[..line.len().min(4 * MAX_ERROR_LINE_CHARS)]);
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

/// The error message's part from the last stderr line [`read_stderr`]
/// kept (its bytes, enough for [`MAX_ERROR_LINE_CHARS`] characters).
pub(super) fn error_line(last_line: &[u8]) -> Option<String> {
    (!last_line.is_empty()).then(|| {
        String::from_utf8_lossy(last_line)
            .chars()
            .take(MAX_ERROR_LINE_CHARS)
            .collect()
    })
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

    /// A pipe that yields `bytes`, then its end.
    fn piped(bytes: &[u8]) -> pipe::Receiver {
        use tokio::io::AsyncWriteExt;
        let (mut tx, rx) = pipe::pipe().unwrap();
        let bytes = bytes.to_vec();
        tokio::spawn(async move { tx.write_all(&bytes).await.unwrap() });
        rx
    }

    /// Collects what a reader logs.
    #[derive(Default)]
    struct Logged(Mutex<Vec<(LogStream, String)>>);

    impl Logged {
        fn push(&self, stream: LogStream, line: &[u8]) {
            let line = String::from_utf8_lossy(line).into_owned();
            self.0.lock().unwrap().push((stream, line));
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
        read_stdout(piped(stdout), false, &|s, l| logged.push(s, l), &mut result).await;
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
        read_stdout(piped(b"[1, 2]"), false, &|_, _| {}, &mut result).await;
        assert_eq!(
            result,
            Some(json!([1, 2])),
            "the last line needs no newline"
        );

        let mut result = None;
        read_stdout(piped(b"only text\n"), false, &|_, _| {}, &mut result).await;
        assert_eq!(result, None);
    }

    #[tokio::test]
    async fn stderr_splits_progress_from_log_lines() {
        let stderr = b"hello\nPROGRESS 10 a\nPROGRESS 20 b\nboom: it broke\n\n" as &[u8];
        let (tx, mut rx) = watch::channel(None);
        let mut last = Vec::new();
        let logged = Logged::default();
        read_stderr(
            piped(stderr),
            false,
            &|s, l| logged.push(s, l),
            tx,
            &mut last,
        )
        .await;
        assert_eq!(error_line(&last).as_deref(), Some("boom: it broke"));
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
        let mut lines = Lines::new(piped(&input), false);
        assert_eq!(lines.next().await.unwrap().unwrap().len(), MAX_LINE_BYTES);
        assert_eq!(lines.next().await.unwrap().unwrap(), b"next");
        assert!(lines.next().await.unwrap().is_none());
    }

    /// A flood written in 8 KiB blocks, as stdio writes: reads that empty
    /// the pipe pause with it out of the reactor, and lines straddle the
    /// reads; none is lost, split or reordered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_read_with_pauses_keeps_every_line() {
        use tokio::io::AsyncWriteExt;
        let text: String = (0..100_000)
            .map(|i| format!("line {i:06} {}\r\n", "x".repeat(i % 97)))
            .collect();
        let (mut tx, rx) = pipe::pipe().unwrap();
        let blocks = text.clone().into_bytes();
        tokio::spawn(async move {
            for block in blocks.chunks(8 << 10) {
                tx.write_all(block).await.unwrap();
            }
            tx.write_all(b"no newline at the end").await.unwrap();
        });
        let mut lines = Lines::new(rx, true);
        for expected in text.lines() {
            let line = lines.next().await.unwrap().unwrap();
            assert_eq!(line, expected.as_bytes());
        }
        assert_eq!(
            lines.next().await.unwrap().unwrap(),
            b"no newline at the end"
        );
        assert!(lines.next().await.unwrap().is_none());
    }
}
