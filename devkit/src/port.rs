//! [`free_port`]: a loopback port nothing listens on, for a server that
//! is told its port rather than handed a bound socket (a child process).

use tokio::net::TcpListener;

/// A port free on `127.0.0.1` a moment ago. Another process can take it
/// before the caller binds it, so callers that start a child on it retry
/// with a fresh one ([`crate::valkey::LocalValkey::start_on_free_port`]).
pub async fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}
