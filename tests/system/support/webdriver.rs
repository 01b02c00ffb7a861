//! Headless Chromium driven through chromedriver's W3C WebDriver HTTP API,
//! with plain `reqwest`: enough to load pages, fill a form, click and read
//! elements. Chromium and chromedriver are Debian's packages
//! (`scripts/ensure-chromium` installs them); everything stays on loopback.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session; chromedriver (and so Chromium) ends with it.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:{port}/session/{id}`
    session: String,
    driver: Child,
    /// Chromium's process id, to kill it if the test panics before
    /// [`Browser::close`] (chromedriver's death alone would orphan it).
    chromium_pid: Option<i32>,
    closed: bool,
    _profile: crate::support::TempDir,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    /// How it was found: found again when the page replaced it.
    css: String,
    id: std::sync::Mutex<String>,
}

/// Finds an installed program, or fails the test saying how to get it.
fn installed(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let path = PathBuf::from(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "{} is not installed; the browser test needs Debian's chromium and chromium-driver: \
         run scripts/ensure-chromium (as root) or apt-get install chromium chromium-driver",
        names[0]
    );
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// with a fresh profile and no network use of its own.
    pub async fn start() -> Self {
        let chromium = installed(&["chromium", "chromium-browser"]);
        let chromedriver = installed(&["chromedriver"]);
        let profile = crate::support::TempDir::new();
        let http = reqwest::Client::new();
        // A free port may be taken between probing and binding: a few tries.
        for _ in 0..5 {
            let port = crate::support::free_port().await;
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("chromedriver starts");
            let base = format!("http://127.0.0.1:{port}");
            if !ready(&http, &base, &mut driver).await {
                continue;
            }
            let capabilities = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path.display()),
                    ]
                }
            }}});
            let answer = send(http.post(format!("{base}/session")).json(&capabilities)).await;
            let id = answer["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no browser session: {answer:#}"));
            let chromium_pid = answer["value"]["capabilities"]["goog:processID"]
                .as_i64()
                .map(|pid| pid as i32);
            return Self {
                http,
                session: format!("{base}/session/{id}"),
                driver,
                chromium_pid,
                closed: false,
                _profile: profile,
            };
        }
        panic!("chromedriver did not start");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        send(request).await["value"].take()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn current_url(&self) -> String {
        let url = self.call(reqwest::Method::GET, "/url", None).await;
        url.as_str().expect("a URL").to_string()
    }

    /// The first element matching `css`, if there is one now.
    pub async fn find(&self, css: &str) -> Option<Element<'_>> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = found.get(ELEMENT)?.as_str()?.to_string();
        Some(Element {
            browser: self,
            css: css.to_string(),
            id: std::sync::Mutex::new(id),
        })
    }

    /// The element matching `css`, waiting for it up to `within`.
    pub async fn wait_for(&self, css: &str, within: Duration) -> Element<'_> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {css} within {within:?} on {}",
                self.current_url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill().await;
        self.closed = true;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let (false, Some(pid)) = (self.closed, self.chromium_pid) {
            // SAFETY: kill(2) with a pid this test's chromedriver started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// How long a replaced element may take to appear again.
const REFIND: Duration = Duration::from_secs(10);

/// One WebDriver exchange; its JSON answer.
async fn send(request: reqwest::RequestBuilder) -> Value {
    request
        .send()
        .await
        .expect("chromedriver answers")
        .json()
        .await
        .expect("chromedriver answers JSON")
}

/// Waits for chromedriver's `/status` to say it is ready; false if it
/// exited (its port was taken) or never got ready.
async fn ready(http: &reqwest::Client, base: &str, driver: &mut Child) -> bool {
    for _ in 0..300 {
        if let Ok(Some(_)) = driver.try_wait() {
            return false;
        }
        if let Ok(response) = http.get(format!("{base}/status")).send().await {
            let status: Value = response.json().await.unwrap_or_default();
            if status["value"]["ready"] == true {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = driver.kill().await;
    false
}

impl Element<'_> {
    /// One WebDriver command on this element; its answer. The live
    /// dashboard redraws parts of the page every 2 s, so an element found
    /// may be replaced before a command lands ("stale element reference"):
    /// then the element matching the same selector is found again and the
    /// command repeated. Any other WebDriver error fails the test.
    async fn command(&self, method: reqwest::Method, rest: &str, body: Option<Value>) -> Value {
        for _ in 0..20 {
            let id = self.id.lock().unwrap().clone();
            let path = format!("/element/{id}{rest}");
            let answer = self.browser.call(method.clone(), &path, body.clone()).await;
            match answer.get("error").and_then(Value::as_str) {
                None => return answer,
                Some("stale element reference") => {
                    let again = self.browser.wait_for(&self.css, REFIND).await;
                    *self.id.lock().unwrap() = again.id.into_inner().unwrap();
                }
                Some(_) => panic!("{rest} on {}: {answer}", self.css),
            }
        }
        panic!("{} was replaced 20 times in a row", self.css)
    }

    pub async fn click(&self) {
        self.command(reqwest::Method::POST, "/click", Some(json!({})))
            .await;
    }

    pub async fn type_text(&self, text: &str) {
        self.command(reqwest::Method::POST, "/value", Some(json!({"text": text})))
            .await;
    }

    pub async fn text(&self) -> String {
        let text = self.command(reqwest::Method::GET, "/text", None).await;
        text.as_str().unwrap_or_default().to_string()
    }

    pub async fn attribute(&self, name: &str) -> Option<String> {
        let path = format!("/attribute/{name}");
        let value = self.command(reqwest::Method::GET, &path, None).await;
        value.as_str().map(str::to_string)
    }
}
