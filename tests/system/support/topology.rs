//! The store as production runs it, started locally from real server
//! processes: a 3-node cluster, a primary + replica under 3 sentinels, and
//! a TLS server with ACL users (its CA made in the test with `openssl`).

#![allow(dead_code)] // each test binary uses a different part of this

use std::path::{Path, PathBuf};
use std::time::Duration;

use devkit::valkey::LocalValkey;
use fred::prelude::*;
use fred::types::CustomCommand;

/// A free loopback port (it may be taken before use: callers retry).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory named `{name}-{random}` under the system's temp dir.
pub fn scratch(name: &str) -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir()
        .unwrap();
    Scratch {
        path: dir.path().to_owned(),
        dir,
    }
}

/// A test's directory (a topology's, a system's): `tempfile`'s `TempDir`,
/// removed on drop, but kept when the test failed, with the servers' logs
/// the failure message points to. The last field of its owner, so the
/// servers stop first.
pub struct Scratch {
    pub path: PathBuf,
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        scratch("machine-jobs-test")
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.dir.disable_cleanup(std::thread::panicking());
    }
}

/// Starts a server with `options`, retrying on another port when the
/// chosen one was taken meanwhile.
pub async fn server(dir: &Path, config_file: Option<&Path>, options: &[String]) -> LocalValkey {
    for _ in 0..5 {
        let port = free_port();
        if let Ok(server) = LocalValkey::start_with(port, dir, config_file, options).await {
            return server;
        }
    }
    panic!("could not start a Valkey server; run scripts/ensure-valkey");
}

/// One command to one server, plain TCP, no auth.
pub async fn command(port: u16, name: &'static str, args: Vec<String>) -> Value {
    let client = Client::new(
        Config::from_url(&format!("redis://127.0.0.1:{port}")).unwrap(),
        None,
        None,
        None,
    );
    client.init().await.unwrap();
    let answer = client
        .custom(CustomCommand::new_static(name, None, false), args)
        .await
        .unwrap_or_else(|e| panic!("{name} on {port}: {e}"));
    let _ = client.quit().await;
    answer
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Polls `check` every 50 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 3-primary cluster with no replicas, every slot assigned.
pub struct Cluster {
    pub nodes: Vec<LocalValkey>,
    _dir: Scratch,
}

impl Cluster {
    pub async fn start() -> Self {
        let dir = scratch("cluster");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let node_dir = dir.join(i.to_string());
            let options = strings(&["--cluster-enabled", "yes", "--appendonly", "no"]);
            nodes.push(server(&node_dir, None, &options).await);
        }
        // What `valkey-cli --cluster create --cluster-replicas 0` does,
        // without needing the CLI: split the 16384 slots, introduce the
        // nodes to each other, wait until all agree.
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (from, to)) in nodes.iter().zip(ranges) {
            let args = vec!["ADDSLOTSRANGE".into(), from.to_string(), to.to_string()];
            command(node.port(), "CLUSTER", args).await;
        }
        for node in &nodes[1..] {
            let args = vec!["MEET".into(), "127.0.0.1".into(), node.port().to_string()];
            command(nodes[0].port(), "CLUSTER", args).await;
        }
        for node in &nodes {
            let port = node.port();
            eventually(Duration::from_secs(20), "cluster_state:ok", || async move {
                let info: String = command(port, "CLUSTER", strings(&["INFO"]))
                    .await
                    .convert()
                    .unwrap();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            })
            .await;
        }
        Self { nodes, _dir: dir }
    }

    pub fn url(&self) -> String {
        let first = self.nodes[0].port();
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port()))
            .collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", others.join("&"))
    }
}

pub const MASTER_SET: &str = "jobs";

/// A primary, its replicas, and 3 sentinels watching them with timeouts
/// tuned for a test (down after 1 s, failover within a few).
pub struct Sentinels {
    pub primary: LocalValkey,
    pub replicas: Vec<LocalValkey>,
    pub sentinels: Vec<LocalValkey>,
    _dir: Scratch,
}

impl Sentinels {
    pub async fn start(replica_count: usize) -> Self {
        let dir = scratch("sentinel");
        // A diskless full sync waits 5 s by default for more replicas to
        // join it; here both replicas start within milliseconds.
        let primary = server(
            &dir.join("primary"),
            None,
            &strings(&["--appendonly", "no", "--repl-diskless-sync-delay", "0"]),
        )
        .await;
        let replicaof = vec![
            "--appendonly".into(),
            "no".into(),
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port().to_string(),
        ];
        let mut replicas = Vec::new();
        for i in 0..replica_count {
            replicas.push(server(&dir.join(format!("replica-{i}")), None, &replicaof).await);
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let sentinel_dir = dir.join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&sentinel_dir).unwrap();
            let conf = sentinel_dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "sentinel monitor {MASTER_SET} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_SET} 1000\n\
                     sentinel failover-timeout {MASTER_SET} 5000\n\
                     sentinel parallel-syncs {MASTER_SET} 1\n",
                    primary.port()
                ),
            )
            .unwrap();
            let options = strings(&["--sentinel"]);
            sentinels.push(server(&sentinel_dir, Some(&conf), &options).await);
        }
        for replica in &replicas {
            let port = replica.port();
            eventually(
                Duration::from_secs(20),
                "the replicas in sync",
                || async move {
                    let info: String = command(port, "INFO", strings(&["replication"]))
                        .await
                        .convert()
                        .unwrap();
                    info.contains("master_link_status:up")
                },
            )
            .await;
        }
        Self {
            primary,
            replicas,
            sentinels,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        let first = self.sentinels[0].port();
        let others: Vec<String> = self.sentinels[1..]
            .iter()
            .map(|s| format!("&node=127.0.0.1:{}", s.port()))
            .collect();
        format!(
            "redis-sentinel://127.0.0.1:{first}?master={MASTER_SET}{}",
            others.concat()
        )
    }

    /// The port of the primary the sentinels currently name.
    pub async fn primary_port(&self) -> u16 {
        let args = strings(&["get-master-addr-by-name", MASTER_SET]);
        let answer: Vec<String> = command(self.sentinels[0].port(), "SENTINEL", args)
            .await
            .convert()
            .unwrap();
        answer[1].parse().unwrap()
    }
}

/// A CA and a server certificate for `127.0.0.1`, made with `openssl`.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let path = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl is installed");
            assert!(status.success(), "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=machine-jobs test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        std::fs::write(
            path("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        Self {
            ca_cert: path("ca.crt"),
            server_cert: path("server.crt"),
            server_key: path("server.key"),
        }
    }
}

/// A server that takes TLS on `tls_port` (and plain TCP on its `port`,
/// for the readiness probe only: every user needs a password), with the
/// ACL users of `acl_file`.
pub struct TlsServer {
    pub server: LocalValkey,
    pub tls_port: u16,
    pub ca: TestCa,
    _dir: Scratch,
}

impl TlsServer {
    pub async fn start(acl_file: &Path) -> Self {
        let dir = scratch("tls");
        let ca = TestCa::create(&dir.join("pki"));
        let tls_port = free_port();
        let options = vec![
            "--appendonly".into(),
            "no".into(),
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            ca.server_cert.display().to_string(),
            "--tls-key-file".into(),
            ca.server_key.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca.ca_cert.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
            "--aclfile".into(),
            acl_file.display().to_string(),
        ];
        let server = server(&dir, None, &options).await;
        Self {
            server,
            tls_port,
            ca,
            _dir: dir,
        }
    }
}
