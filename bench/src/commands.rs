//! [`CommandCounter`]: counts the commands clients send to the store, by
//! watching its `MONITOR` feed.
//!
//! The server's own counters (`INFO stats`, `INFO commandstats`) also
//! count every command a Lua script runs inside itself, so a transition
//! that is one script call would count as a dozen. `MONITOR` tags those
//! inner commands `[0 lua]`; everything else is a round trip some client
//! made, and its address tells which client made it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Snapshot of the client commands seen so far.
#[derive(Clone, Debug, Default)]
pub struct Counted {
    pub total: u64,
    /// By command name (lower case), for the profile.
    pub by_name: BTreeMap<String, u64>,
    /// By client address (`127.0.0.1:port`), to tell clients apart.
    pub by_client: BTreeMap<String, u64>,
}

impl Counted {
    /// Every client address seen.
    pub fn clients(&self) -> Vec<String> {
        self.by_client.keys().cloned().collect()
    }

    /// Commands of the clients in `clients`.
    pub fn of(&self, clients: &[String]) -> u64 {
        clients.iter().filter_map(|c| self.by_client.get(c)).sum()
    }
}

pub struct CommandCounter {
    counted: Arc<Mutex<Counted>>,
    /// The last mark the feed has shown, see [`CommandCounter::snapshot`].
    marks: watch::Receiver<u64>,
    /// The connection that sends the marks.
    marker: Mutex<Option<TcpStream>>,
    next_mark: Mutex<u64>,
}

const MARK: &str = "bench-command-counter-mark-";

impl CommandCounter {
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        let mut monitor = TcpStream::connect(("127.0.0.1", port)).await?;
        monitor.write_all(b"MONITOR\r\n").await?;
        let mut lines = BufReader::new(monitor).lines();
        let ok = lines.next_line().await?.context("MONITOR refused")?;
        anyhow::ensure!(ok.starts_with("+OK"), "MONITOR answered {ok}");
        let marker = TcpStream::connect(("127.0.0.1", port)).await?;
        let marker_addr = format!("[0 {}]", marker.local_addr()?);

        let counted = Arc::new(Mutex::new(Counted::default()));
        let (mark_tx, marks) = watch::channel(0);
        let feed = counted.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                // `+1700000000.123456 [0 127.0.0.1:5000] "evalsha" "..." ...`
                let mut parts = line.splitn(4, ' ');
                let (_time, db, client, rest) = (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next().unwrap_or(""),
                );
                let source = format!("{} {}", db.unwrap_or(""), client.unwrap_or(""));
                if source == marker_addr {
                    if let Some(n) = rest.split(MARK).nth(1) {
                        let n = n.trim_end_matches('"').parse().unwrap_or(0);
                        mark_tx.send_replace(n);
                    }
                    continue;
                }
                if source.ends_with("lua]") {
                    continue;
                }
                let name = rest.split('"').nth(1).unwrap_or("?").to_lowercase();
                let client = client.unwrap_or("").trim_end_matches(']').to_string();
                let mut counted = feed.lock().expect("counter lock");
                counted.total += 1;
                *counted.by_name.entry(name).or_default() += 1;
                *counted.by_client.entry(client).or_default() += 1;
            }
        });
        Ok(Self {
            counted,
            marks,
            marker: Mutex::new(Some(marker)),
            next_mark: Mutex::new(0),
        })
    }

    /// The commands counted up to now: sends a mark through the server
    /// and waits for the feed to show it, so every command the server ran
    /// before this call is in.
    pub async fn snapshot(&self) -> anyhow::Result<Counted> {
        let mark = {
            let mut next = self.next_mark.lock().expect("mark lock");
            *next += 1;
            *next
        };
        let mut marker = self
            .marker
            .lock()
            .expect("marker lock")
            .take()
            .context("concurrent snapshot")?;
        let command = format!("ECHO {MARK}{mark}\r\n");
        let sent = marker.write_all(command.as_bytes()).await;
        *self.marker.lock().expect("marker lock") = Some(marker);
        sent?;
        let mut marks = self.marks.clone();
        marks.wait_for(|seen| *seen >= mark).await?;
        Ok(self.counted.lock().expect("counter lock").clone())
    }
}
