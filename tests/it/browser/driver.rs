//! Headless Chromium for the browser tests: a chromedriver process per test and a small W3C
//! WebDriver client over `reqwest`, with polling waits that leave a screenshot and the page's
//! console behind when they time out.
//!
//! Why not `fantoccini`: this crate depends on it with its default features off, and then it has
//! no HTTP connector of its own; building one needs `hyper`/`hyper-util` types, which are not
//! dependencies of this crate. The few WebDriver commands the tests need are simple JSON over HTTP.

use crate::support::PATIENCE;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use reqwest::{Client, Method};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where screenshots go: `target/screenshots/<test>-<view>.png`.
pub(crate) fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots")
}

/// Removes the screenshots a previous run of the test `name` left, so what is there is this run's.
fn forget_screenshots(name: &str) {
    let Ok(entries) = std::fs::read_dir(screenshot_dir()) else { return };
    let prefix = format!("{name}-");
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && file.ends_with(".png") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A port that was free a moment ago (bind to port 0, read it, let it go).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// The first of `names` found on `PATH` (or in `/usr/bin`), as an executable file.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/bin"));
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Chromium and chromedriver, or what is missing.
fn find_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = which(&["chromium", "chromium-browser"]);
    let driver = which(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Ok((c, d)),
        (c, d) => {
            let mut missing = Vec::new();
            if c.is_none() {
                missing.push("chromium");
            }
            if d.is_none() {
                missing.push("chromedriver");
            }
            Err(format!(
                "{} not found on PATH (Debian: apt-get install chromium chromium-driver)",
                missing.join(" and ")
            ))
        }
    }
}

/// A headless Chromium driven through its own chromedriver; both are gone when this drops.
pub(crate) struct Browser {
    /// The test's name: the prefix of its screenshots.
    name: String,
    http: Client,
    /// `http://127.0.0.1:<port>`: chromedriver.
    driver_url: String,
    driver_addr: SocketAddr,
    /// The WebDriver session id.
    session: String,
    /// chromedriver, leader of its own process group (Chromium runs inside that group).
    driver: Child,
    /// Chromium's profile, thrown away afterwards.
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium for the test `name`.
    ///
    /// Without Chromium or chromedriver: a failure when `CI` is set (CI must run these tests),
    /// otherwise `None` after printing why the test is skipped.
    pub(crate) async fn launch(name: &str) -> Option<Browser> {
        let (chromium, chromedriver) = match find_tools() {
            Ok(tools) => tools,
            Err(why) if std::env::var_os("CI").is_some() => {
                panic!("browser test {name}: {why}; CI is set, so this test fails instead of skipping")
            }
            Err(why) => {
                // Straight to stderr, past the test harness's capture: a skip must be visible.
                let _ =
                    writeln!(std::io::stderr(), "SKIPPED browser test {name}: {why} (set CI=1 to make this a failure)");
                return None;
            }
        };
        forget_screenshots(name);
        let http = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(90))
            .build()
            .expect("an HTTP client for chromedriver");

        // A free port may be taken by a parallel test before chromedriver binds it: then it
        // exits at once, and another port is tried.
        let mut attempts = 0;
        let mut browser = loop {
            attempts += 1;
            let port = free_port();
            let driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromedriver.display()));
            let driver_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut browser = Browser {
                name: name.to_owned(),
                http: http.clone(),
                driver_url: format!("http://{driver_addr}"),
                driver_addr,
                session: String::new(),
                driver,
                _profile: tempfile::Builder::new().prefix("aop-chromium-").tempdir().expect("a profile directory"),
            };
            match browser.wait_driver_ready().await {
                Ok(()) => break browser,
                Err(status) if attempts < 5 => {
                    let _ =
                        writeln!(std::io::stderr(), "chromedriver exited at start-up ({status}); trying another port");
                }
                Err(status) => panic!("chromedriver exited at start-up with {status}, {attempts} times"),
            }
        };

        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1400,900".to_owned(),
            // Names under `.test` reach loopback: a page of a test's own site then has an origin
            // of its own, foreign to the collector's (see `site.rs`).
            "--host-resolver-rules=MAP *.test 127.0.0.1".to_owned(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 60_000, "pageLoad": 30_000, "implicit": 0},
        }}});
        let url = format!("{}/session", browser.driver_url);
        let answer = browser.http.post(&url).json(&caps).send().await.expect("POST /session to chromedriver");
        let status = answer.status();
        let body: Value = answer.json().await.expect("a JSON answer to POST /session");
        browser.session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start Chromium ({status}): {body}"))
            .to_owned();
        Some(browser)
    }

    /// Waits until chromedriver answers; `Err` with its exit status if it exited instead.
    async fn wait_driver_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = self.http.get(format!("{}/status", self.driver_url)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return Ok(());
                    }
                }
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {} within {PATIENCE:?}",
                self.driver_url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // ------------------------------------------------------------------ WebDriver commands

    /// A command of this session: its `value`, or the WebDriver error as text.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.driver_url, self.session);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer = req.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = answer.status();
        let body: Value = answer.json().await.map_err(|e| format!("{method} {path}: answer not JSON: {e}"))?;
        if status.is_success() {
            Ok(body["value"].clone())
        } else {
            Err(format!("{method} {path}: {} — {}", body["value"]["error"], body["value"]["message"]))
        }
    }

    /// Opens `url` in the tab.
    pub(crate) async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url}))).await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// The tab's URL.
    pub(crate) async fn url(&self) -> String {
        let v = self.command(Method::GET, "/url", None).await.unwrap_or_else(|e| panic!("{e}"));
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns its result.
    pub(crate) async fn js(&self, script: &str, args: Value) -> Value {
        self.try_js(script, args).await.unwrap_or_else(|e| panic!("{e}\nscript: {script}"))
    }

    async fn try_js(&self, script: &str, args: Value) -> Result<Value, String> {
        self.command(Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Runs an asynchronous `script`: it reports by calling `arguments[arguments.length - 1]`.
    pub(crate) async fn js_async(&self, script: &str, args: Value) -> Value {
        self.command(Method::POST, "/execute/async", Some(json!({"script": script, "args": args})))
            .await
            .unwrap_or_else(|e| panic!("{e}\nscript: {script}"))
    }

    /// The WebDriver reference of the first element matching `css`, if any.
    async fn find(&self, css: &str) -> Result<String, String> {
        let v = self.command(Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await?;
        v[ELEMENT_KEY].as_str().map(str::to_owned).ok_or_else(|| format!("no element reference in {v}"))
    }

    /// Clicks (as a user would: scrolled into view, at its centre) the first element matching
    /// `css`, retrying while it is missing, re-rendered or covered, up to [`PATIENCE`].
    pub(crate) async fn click(&self, css: &str) {
        self.retry(
            &format!("click {css}"),
            |id| {
                let path = format!("/element/{id}/click");
                async move { self.command(Method::POST, &path, Some(json!({}))).await.map(drop) }
            },
            css,
        )
        .await;
    }

    /// Types `text` into the first element matching `css` (which gets the focus).
    pub(crate) async fn send_keys(&self, css: &str, text: &str) {
        self.retry(
            &format!("type {text:?} into {css}"),
            |id| {
                let path = format!("/element/{id}/value");
                async move { self.command(Method::POST, &path, Some(json!({"text": text}))).await.map(drop) }
            },
            css,
        )
        .await;
    }

    async fn retry<F, Fut>(&self, what: &str, mut act: F, css: &str)
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.find(css).await {
                Ok(id) => match act(id).await {
                    Ok(()) => return,
                    Err(e) => last = e,
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.fail(what, &last).await
    }

    /// Saves a PNG of the viewport as `target/screenshots/<test>-<view>.png` and returns its path.
    pub(crate) async fn screenshot(&self, view: &str) -> PathBuf {
        let v = self.command(Method::GET, "/screenshot", None).await.unwrap_or_else(|e| panic!("{e}"));
        let png = base64_decode(v.as_str().expect("a base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("{}-{view}.png", self.name));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        println!("screenshot: {}", path.display());
        path
    }

    /// The browser console since the last call, one `LEVEL source: message` line per entry.
    pub(crate) async fn console(&self) -> Vec<String> {
        let Ok(v) = self.command(Method::POST, "/se/log", Some(json!({"type": "browser"}))).await else {
            return Vec::new();
        };
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}: {}", e["level"].as_str().unwrap_or("?"), e["source"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails the test if the dashboard threw an uncaught exception or reported a failed handler
    /// (its `console.error("aop dashboard: …")`). Network errors (a stopped collector) are not
    /// script errors and are allowed.
    pub(crate) async fn assert_no_script_errors(&self) {
        let errors: Vec<String> = self
            .console()
            .await
            .into_iter()
            .filter(|l| {
                l.starts_with("SEVERE \"javascript\"") || (l.starts_with("SEVERE") && l.contains("aop dashboard"))
            })
            .collect();
        assert!(errors.is_empty(), "the dashboard reported script errors:\n{}", errors.join("\n"));
    }

    // ------------------------------------------------------------------ waiting

    /// Polls `script` every 50 ms until `accept` takes its result, for up to `limit`; on a
    /// timeout, fails with `what`, the last result, a screenshot and the console.
    pub(crate) async fn poll(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        args: Value,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.try_js(script, args.clone()).await {
                Ok(v) if accept(&v) => return v,
                Ok(v) => last = v,
                Err(e) => last = Value::String(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.fail(&format!("{what} (within {limit:?})"), &format!("last seen: {last}")).await
    }

    /// Waits until `script` returns something other than `null`, `undefined` or `false`; returns it.
    pub(crate) async fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        self.poll(what, PATIENCE, script, args, |v| !v.is_null() && *v != Value::Bool(false)).await
    }

    /// Waits until an element matches `css`.
    pub(crate) async fn wait_for(&self, css: &str) {
        self.poll(&format!("an element {css}"), PATIENCE, COUNT, json!([css]), |v| v.as_u64().is_some_and(|n| n > 0))
            .await;
    }

    /// Waits until no element matches `css`.
    pub(crate) async fn wait_gone(&self, css: &str) {
        self.poll(&format!("no element {css}"), PATIENCE, COUNT, json!([css]), |v| v.as_u64() == Some(0)).await;
    }

    /// Waits until the first element matching `css` has `attr` = `want`.
    pub(crate) async fn wait_attr(&self, css: &str, attr: &str, want: &str) {
        self.poll(&format!("{css} with {attr}={want:?}"), PATIENCE, ATTR, json!([css, attr]), |v| v == want).await;
    }

    /// Waits until the first element matching `css` has the (trimmed) text `want`.
    pub(crate) async fn wait_text(&self, css: &str, want: &str) {
        self.wait_text_within(css, want, PATIENCE).await;
    }

    pub(crate) async fn wait_text_within(&self, css: &str, want: &str, limit: Duration) {
        self.poll(&format!("{css} saying {want:?}"), limit, TEXT, json!([css]), |v| v == want).await;
    }

    /// `attr` of the first element matching `css`, if there is one.
    pub(crate) async fn attr(&self, css: &str, attr: &str) -> Option<String> {
        self.js(ATTR, json!([css, attr])).await.as_str().map(str::to_owned)
    }

    /// The (trimmed) text of the first element matching `css`, if there is one.
    pub(crate) async fn text(&self, css: &str) -> Option<String> {
        self.js(TEXT, json!([css])).await.as_str().map(str::to_owned)
    }

    /// `attr` of every element matching `css`, in document order.
    pub(crate) async fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let v = self.js(ATTRS, json!([css, attr])).await;
        serde_json::from_value(v).expect("a list of strings")
    }

    /// Fails the test with `what`, the detail, the tab's URL, a screenshot and its console.
    async fn fail(&self, what: &str, detail: &str) -> ! {
        let url = self.url().await;
        let shot = self.screenshot("failure").await;
        let console = self.console().await;
        panic!(
            "browser test {}: timed out waiting for {what}\n{detail}\nurl: {url}\nscreenshot: {}\n--- console ---\n{}",
            self.name,
            shot.display(),
            console.join("\n")
        )
    }
}

const COUNT: &str = "return document.querySelectorAll(arguments[0]).length;";
const ATTR: &str = "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;";
const ATTRS: &str =
    "return [...document.querySelectorAll(arguments[0])].map((e) => e.getAttribute(arguments[1]) ?? '');";
const TEXT: &str = "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;";

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask chromedriver to quit Chromium (blocking: no runtime to lean on in a destructor),
        // then end the whole process group this test started, whatever is left of it.
        if !self.session.is_empty() {
            let _ = delete_session(self.driver_addr, &self.session);
        }
        let _ = killpg(Pid::from_raw(self.driver.id() as i32), Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/<id>` over a plain socket, bounded by short timeouts.
fn delete_session(addr: SocketAddr, session: &str) -> std::io::Result<()> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        conn,
        "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    // chromedriver keeps the connection open whatever we ask: read one answer, not to the end.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()))
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return Ok(());
            }
        }
        match conn.read(&mut chunk)? {
            0 => return Ok(()),
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Standard base64 (with padding, whitespace ignored), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("iVBO\nRw=="), b"\x89PNG");
}
