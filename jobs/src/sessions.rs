//! Dashboard sessions in the store.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `session:{id}` | string, expiring | the SHA-256 (hex) of the API token the session was opened with |
//!
//! The session id is what the browser's cookie holds, never the token:
//! deleting the key logs the session out everywhere at once, and a token
//! removed from the configuration no longer matches the stored digest.
//! Every dispatcher sharing the store sees the same sessions.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use crate::store::{Result, Store};

impl Store {
    /// Stores a new session for `ttl`. Ids are random and long, so a
    /// collision is not a case to handle: `NX` only keeps an existing
    /// session from being overwritten.
    pub async fn open_session(&self, id: &str, token_digest: &str, ttl: Duration) -> Result<()> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let _: Option<String> = self
            .client
            .set(
                self.session_key(id),
                token_digest,
                Some(Expiration::EX(secs)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(())
    }

    /// The token digest of a live session.
    pub async fn session(&self, id: &str) -> Result<Option<String>> {
        Ok(self.client.get(self.session_key(id)).await?)
    }

    /// Ends a session (logout).
    pub async fn close_session(&self, id: &str) -> Result<()> {
        let _: i64 = self.client.del(self.session_key(id)).await?;
        Ok(())
    }

    fn session_key(&self, id: &str) -> String {
        self.key(&format!("session:{id}"))
    }
}
