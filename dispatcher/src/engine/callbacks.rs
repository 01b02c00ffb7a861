//! [`Callbacks`]: one POST of the final job view to the job's
//! `callback_url` once it is finished, signed and retried.
//!
//! The dispatcher that makes the terminal transition delivers it, so each
//! finished job is delivered once (at most once if that dispatcher dies
//! while retrying: poll `GET /jobs/{id}` when a callback must never be
//! missed).
//!
//! With a secret configured the body is signed: the header
//! `x-signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, as GitHub
//! webhooks do, so receivers can reuse their verification code.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hmac::{Hmac, KeyInit, Mac};
use jobs::Job;

use crate::engine::callback_targets::CallbackTargets;
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-signature-256";

#[derive(Clone)]
pub struct Callbacks {
    http: reqwest::Client,
    secret: Option<Arc<str>>,
    targets: CallbackTargets,
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("receiver answered {0}")]
    Status(reqwest::StatusCode),
    /// Not a callback target (any more): never retried.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

impl DeliveryError {
    /// 3xx (redirects are not followed) and 4xx answers (but 408 and
    /// 429) will not change on a retry.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status(s) => s.is_server_error() || *s == 408 || *s == 429,
            Self::Transport(_) => true,
            Self::Refused(_) => false,
        }
    }
}

impl Callbacks {
    /// Sends only to `targets` ([`CallbackTargets`]): every address is
    /// checked when the connection is made, and redirects are not
    /// followed (a 3xx is a failed delivery).
    pub fn new(secret: Option<String>, targets: CallbackTargets) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            // Straight to the target: through a proxy (HTTP_PROXY), the
            // address check would see the proxy's address, not the target's.
            .no_proxy()
            .dns_resolver(targets.resolver())
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            http,
            secret: secret.map(Into::into),
            targets,
        }
    }

    /// Sends the job's final view to its `callback_url`, in the background.
    pub fn deliver(&self, job: &Job) {
        let Some(url) = job.callback_url.clone() else {
            return;
        };
        let body = serde_json::to_vec(job).expect("a job serializes");
        self.post(url, body, ("x-job-id", job.id.to_string()));
    }

    /// Sends a completed batch's view to its `callback_url`, in the
    /// background (header `x-batch-id`).
    pub fn deliver_batch(&self, batch: &jobs::Batch) {
        let Some(url) = batch.callback_url.clone() else {
            return;
        };
        let body = serde_json::to_vec(batch).expect("a batch serializes");
        self.post(url, body, ("x-batch-id", batch.id.to_string()));
    }

    /// POSTs `body`, signed, with the header naming what it is about,
    /// retrying with backoff.
    fn post(&self, url: String, body: Vec<u8>, (id_header, id): (&'static str, String)) {
        let signature = self.secret.as_deref().map(|secret| sign(secret, &body));
        let http = self.http.clone();
        // Checked again here: the allow-list may have changed since the job
        // was submitted, and IP literals never reach the resolver.
        let refusal = reqwest::Url::parse(&url)
            .map_err(|e| e.to_string())
            .and_then(|parsed| self.targets.refusal(&parsed).map_or(Ok(()), Err));
        tokio::spawn(async move {
            let send = || async {
                if let Err(problem) = &refusal {
                    return Err(DeliveryError::Refused(problem.clone()));
                }
                let mut request = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(id_header, id.as_str())
                    .body(body.clone());
                if let Some(signature) = &signature {
                    request = request.header(SIGNATURE_HEADER, signature);
                }
                let response = request.send().await?;
                match response.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(DeliveryError::Status(s)),
                }
            };
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(60))
                .with_jitter()
                .with_max_times(8);
            match send.retry(backoff).when(DeliveryError::is_retryable).await {
                Ok(()) => tracing::info!(%id_header, %id, "callback delivered"),
                Err(e) => {
                    tracing::warn!(%id_header, %id, error = %e, "callback not delivered; giving up")
                }
            }
        });
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::sign;

    #[test]
    fn signs_like_rfc_4231_test_case_2() {
        // HMAC-SHA256 with key "Jefe" over "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
