//! A real browser for the tests: Debian's headless Chromium, driven through its own chromedriver
//! with the W3C WebDriver protocol (plain JSON over HTTP, spoken here with `reqwest`).
//!
//! Each [`Browser`] starts a chromedriver of its own on a free port and one session in it, so tests
//! running at the same time never share a browser. The session is deleted (which closes Chromium)
//! and chromedriver is killed when the value is dropped, also when the test panics.
//!
//! Lookups wait: [`Browser::find`] polls until the element is present, [`Browser::find_visible`]
//! until it is displayed, both within [`WAIT`]; [`Browser::wait_until`] awaits any condition with a
//! deadline. A missing browser is a failure with the way to install it, never a skipped test.

use base64::Engine as _;
use serde_json::{json, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// The browser binary and its driver, from Debian's `chromium` and `chromium-driver`.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a lookup or a page waits by default (the machine may be busy with other tests).
pub const WAIT: Duration = Duration::from_secs(15);

/// How often a waiting lookup asks the browser again.
const POLL: Duration = Duration::from_millis(50);

/// The W3C name of the key under which an element reference is returned.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// An error answered by the driver: the W3C error code (`no such element`, `stale element
/// reference`, …) and its message.
#[derive(Debug)]
pub struct DriverError {
    pub code: String,
    pub message: String,
}

impl DriverError {
    /// The element is not (or no longer) in the page: worth asking again while waiting.
    fn is_transient(&self) -> bool {
        matches!(self.code.as_str(), "no such element" | "stale element reference" | "element not interactable")
            // Chromium's words for an element of a document the page has since replaced (it
            // navigated between finding the element and asking about it).
            || (self.code == "unknown error" && self.message.contains("does not belong to the document"))
    }
}

/// A cookie as the browser holds it, with its flags.
#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: String,
    pub domain: String,
    pub secure: bool,
    pub http_only: bool,
    /// `Strict`, `Lax` or `None`, as the browser reports it.
    pub same_site: Option<String>,
    /// Seconds since the epoch; `None` for a session cookie.
    pub expiry: Option<u64>,
}

impl Cookie {
    fn from_json(v: &Value) -> Self {
        Cookie {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            value: v["value"].as_str().unwrap_or_default().to_owned(),
            path: v["path"].as_str().unwrap_or_default().to_owned(),
            domain: v["domain"].as_str().unwrap_or_default().to_owned(),
            secure: v["secure"].as_bool().unwrap_or(false),
            http_only: v["httpOnly"].as_bool().unwrap_or(false),
            same_site: v["sameSite"].as_str().map(str::to_owned),
            expiry: v["expiry"].as_u64(),
        }
    }
}

/// One headless Chromium with its own chromedriver.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`: every command of this session is below it.
    session: String,
    /// Dropped after the session is deleted (fields drop after [`Browser::drop`]).
    _driver: Driver,
    /// Names the screenshots: the test that started the browser.
    test: String,
    /// Chromium's process, as the session reported it.
    browser_pid: Option<i32>,
}

impl Browser {
    /// Start chromedriver on a free port and open a headless Chromium session in it.
    pub async fn start() -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's headless Chromium; run ops/test, \
                 which installs chromium and chromium-driver"
            );
        }
        // The test's name, as the test harness names its thread (nextest runs one test a process,
        // on a thread named after it); read here, before any work moves to other threads.
        let test = std::thread::current().name().unwrap_or("browser").replace("::", ".");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
        // A port another process takes between our probe and chromedriver's bind makes it exit;
        // then try another.
        let mut last_failure = String::new();
        for _ in 0..3 {
            match start_driver(&http).await {
                Ok((driver, driver_url)) => {
                    let (session, browser_pid) = new_session(&http, &driver_url).await;
                    return Browser { http, session, _driver: driver, test, browser_pid };
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!("chromedriver did not start: {last_failure}");
    }

    /// Chromium's process id, as its session reported it.
    pub fn browser_pid(&self) -> Option<i32> {
        self.browser_pid
    }

    /// Send one WebDriver command of this session; its `value`, or the driver's error.
    pub async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, DriverError> {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON: {e}"));
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(DriverError {
            code: value["error"].as_str().unwrap_or("unknown error").to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// [`Browser::command`] that must succeed.
    async fn must(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        self.command(method, path, body).await.unwrap_or_else(|e| panic!("WebDriver {what} failed: {}: {}", e.code, e.message))
    }

    /// Open `url` and wait until it has loaded.
    pub async fn goto(&self, url: &str) {
        self.must(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn current_url(&self) -> String {
        self.must(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn title(&self) -> String {
        self.must(reqwest::Method::GET, "/title", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.must(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn back(&self) {
        self.must(reqwest::Method::POST, "/back", None).await;
    }

    pub async fn refresh(&self) {
        self.must(reqwest::Method::POST, "/refresh", None).await;
    }

    /// The first element matching the CSS selector now, if any (no waiting).
    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        match self.command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await {
            Ok(v) => Some(Element { browser: self, id: element_id(&v), css: css.to_owned() }),
            Err(e) if e.code == "no such element" => None,
            Err(e) => panic!("finding {css:?}: {}: {}", e.code, e.message),
        }
    }

    /// Every element matching the CSS selector now (no waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self.must(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found
            .as_array()
            .map(|all| all.iter().map(|v| Element { browser: self, id: element_id(v), css: css.to_owned() }).collect())
            .unwrap_or_default()
    }

    /// The first element matching the CSS selector, once it is in the page (within [`WAIT`]).
    pub async fn find(&self, css: &str) -> Element<'_> {
        self.wait_until(&format!("an element {css:?}"), WAIT, || self.try_find(css)).await
    }

    /// The first element matching the CSS selector, once it is displayed (within [`WAIT`]).
    pub async fn find_visible(&self, css: &str) -> Element<'_> {
        self.wait_until(&format!("a visible element {css:?}"), WAIT, || async {
            let element = self.try_find(css).await?;
            element.displayed().await.then_some(element)
        })
        .await
    }

    /// Click the element matching `css`, once it is visible.
    pub async fn click(&self, css: &str) {
        self.retrying(css, |e| async move { e.try_click().await }).await
    }

    /// Type `text` into the field matching `css`, once it is visible (after what it holds).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.retrying(css, |e| async move { e.try_type(text).await }).await
    }

    /// Empty the field matching `css`, once it is visible.
    pub async fn clear(&self, css: &str) {
        self.retrying(css, |e| async move { e.try_clear().await }).await
    }

    /// Empty the field matching `css` and type `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        self.clear(css).await;
        self.type_into(css, text).await;
    }

    /// The rendered text of the element matching `css`, once it is visible.
    pub async fn text(&self, css: &str) -> String {
        self.retrying(css, |e| async move { e.try_text().await }).await
    }

    /// An attribute of the element matching `css`, once it is present.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.find(css).await.attribute(name).await
    }

    /// Find the visible element matching `css` and act on it; a page that changes in between
    /// (a swap by htmx, a navigation) makes it look again, within [`WAIT`].
    async fn retrying<'s, T, F, Fut>(&'s self, css: &str, act: F) -> T
    where
        F: Fn(Element<'s>) -> Fut,
        Fut: Future<Output = Result<T, DriverError>>,
    {
        let act = &act;
        self.wait_until(&format!("acting on {css:?}"), WAIT, || async move {
            let element = self.try_find(css).await?;
            if !element.displayed().await {
                return None;
            }
            match act(element).await {
                Ok(v) => Some(v),
                Err(e) if e.is_transient() => None,
                Err(e) => panic!("acting on {css:?}: {}: {}", e.code, e.message),
            }
        })
        .await
    }

    /// Run `script` (a function body; `arguments[i]` are `args`) in the page; what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.must(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Run `script` until it calls its last argument (the callback); what it passed.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.must(reqwest::Method::POST, "/execute/async", Some(json!({ "script": script, "args": args }))).await
    }

    /// Every cookie the browser would send to the current page, with its flags.
    pub async fn cookies(&self) -> Vec<Cookie> {
        let all = self.must(reqwest::Method::GET, "/cookie", None).await;
        all.as_array().map(|all| all.iter().map(Cookie::from_json).collect()).unwrap_or_default()
    }

    /// The cookie named `name` the browser would send to the current page.
    pub async fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().await.into_iter().find(|c| c.name == name)
    }

    pub async fn delete_cookies(&self) {
        self.must(reqwest::Method::DELETE, "/cookie", None).await;
    }

    /// The text of the open `alert`/`confirm`/`prompt` dialog, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        match self.command(reqwest::Method::GET, "/alert/text", None).await {
            Ok(v) => Some(v.as_str().unwrap_or_default().to_owned()),
            Err(e) if e.code == "no such alert" => None,
            Err(e) => panic!("reading the alert: {}: {}", e.code, e.message),
        }
    }

    /// Accept the open dialog (OK), once one is open.
    pub async fn accept_alert(&self) {
        self.wait_until("a dialog", WAIT, || self.alert_text()).await;
        self.must(reqwest::Method::POST, "/alert/accept", None).await;
    }

    /// Dismiss the open dialog (Cancel), once one is open.
    pub async fn dismiss_alert(&self) {
        self.wait_until("a dialog", WAIT, || self.alert_text()).await;
        self.must(reqwest::Method::POST, "/alert/dismiss", None).await;
    }

    /// Await `condition` answering `Some`, asking again every few milliseconds until `timeout`;
    /// panics naming `what` (and saving a screenshot of the page) when it never does.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, timeout: Duration, mut condition: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = condition().await {
                return v;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("timed-out").await;
                panic!(
                    "timed out after {timeout:?} waiting for {what} (page {}; screenshot {})",
                    self.current_url().await,
                    shot.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Await the current URL satisfying `check` (after a click that navigates); the URL.
    pub async fn wait_for_url(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        self.wait_until(&format!("the URL to be {what}"), WAIT, || async {
            let url = self.current_url().await;
            check(&url).then_some(url)
        })
        .await
    }

    /// Await the element matching `css` showing text that contains `needle`; its whole text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        self.wait_until(&format!("{css:?} to show {needle:?}"), WAIT, || async {
            let element = self.try_find(css).await?;
            let text = element.try_text().await.ok()?;
            text.contains(needle).then_some(text)
        })
        .await
    }

    /// Save the page as `target/screenshots/<test>-<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.must(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a screenshot is base64");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Deleting the session closes Chromium (and its profile directory); killing chromedriver
        // alone would leave the browser running. Drop may run outside any runtime, and inside one
        // it may not block, so this uses a small runtime on a thread of its own.
        // (A client of its own: the pooled connections of `self.http` belong to the test's
        // runtime, which is blocked here.)
        let session = self.session.clone();
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
                http.delete(&session).send().await.is_ok_and(|r| r.status().is_success())
            })
        })
        .join()
        .unwrap_or(false);
        if !deleted {
            // Chromium outlives its driver: end it by the process id its session reported.
            if let Some(pid) = self.browser_pid {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// The chromedriver process, killed when dropped (also when a session could not be opened).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An element of the page, found by a CSS selector.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
    css: String,
}

impl Element<'_> {
    async fn call(&self, method: reqwest::Method, what: &str, body: Option<Value>) -> Result<Value, DriverError> {
        self.browser.command(method, &format!("/element/{}{what}", self.id), body).await
    }

    fn expect<T>(&self, what: &str, result: Result<T, DriverError>) -> T {
        result.unwrap_or_else(|e| panic!("{what} {:?}: {}: {}", self.css, e.code, e.message))
    }

    async fn try_click(&self) -> Result<(), DriverError> {
        self.call(reqwest::Method::POST, "/click", None).await.map(drop)
    }

    async fn try_type(&self, text: &str) -> Result<(), DriverError> {
        self.call(reqwest::Method::POST, "/value", Some(json!({ "text": text }))).await.map(drop)
    }

    async fn try_clear(&self) -> Result<(), DriverError> {
        self.call(reqwest::Method::POST, "/clear", None).await.map(drop)
    }

    async fn try_text(&self) -> Result<String, DriverError> {
        self.call(reqwest::Method::GET, "/text", None).await.map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn click(&self) {
        let r = self.try_click().await;
        self.expect("clicking", r)
    }

    /// Type `text` into this field, after what it holds.
    pub async fn type_text(&self, text: &str) {
        let r = self.try_type(text).await;
        self.expect("typing into", r)
    }

    pub async fn clear(&self) {
        let r = self.try_clear().await;
        self.expect("clearing", r)
    }

    /// Its rendered text (what a reader sees, not hidden text).
    pub async fn text(&self) -> String {
        let r = self.try_text().await;
        self.expect("reading", r)
    }

    /// The attribute as written in the HTML, if it has one.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        let r = self.call(reqwest::Method::GET, &format!("/attribute/{name}"), None).await;
        self.expect("reading an attribute of", r).as_str().map(str::to_owned)
    }

    /// The DOM property (e.g. `value` of a field as typed, `checked`).
    pub async fn property(&self, name: &str) -> Value {
        let r = self.call(reqwest::Method::GET, &format!("/property/{name}"), None).await;
        self.expect("reading a property of", r)
    }

    /// Whether it is displayed (false once it has left the page).
    pub async fn displayed(&self) -> bool {
        match self.call(reqwest::Method::GET, "/displayed", None).await {
            Ok(v) => v.as_bool().unwrap_or(false),
            Err(e) if e.is_transient() => false,
            Err(e) => panic!("is {:?} displayed: {}: {}", self.css, e.code, e.message),
        }
    }

    /// Its reference, to pass to [`Browser::execute`] as an argument (`arguments[i]` in the script).
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

fn element_id(v: &Value) -> String {
    v[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("not an element reference: {v}")).to_owned()
}

/// `target/screenshots`, next to the tests' scratch directory (`target/tmp`).
pub fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory").join("screenshots")
}

/// Start chromedriver on a free port and await its `/status` saying it is ready; the process and
/// its base URL, or why it did not start.
async fn start_driver(http: &reqwest::Client) -> Result<(Driver, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromedriver-{port}.log"));
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{CHROMEDRIVER}: {e}"))?;
    let mut driver = Driver(driver);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = driver.0.try_wait().unwrap() {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("it exited ({status}): {logged}"));
        }
        let ready = match http.get(format!("{url}/status")).timeout(Duration::from_secs(5)).send().await {
            Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true),
            Err(_) => false,
        };
        if ready {
            return Ok((driver, url));
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within 30 s (log {})", log.display()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Open a headless Chromium session; the URL every command of it is below, and Chromium's process
/// id.
async fn new_session(http: &reqwest::Client, driver_url: &str) -> (String, Option<i32>) {
    let capabilities = json!({
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "timeouts": { "implicit": 0, "pageLoad": 30_000, "script": 15_000 },
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"],
                },
            },
        },
    });
    let response = http
        .post(format!("{driver_url}/session"))
        .json(&capabilities)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating a WebDriver session: {e}"));
    let answer: Value = response.json().await.expect("the new session's answer is JSON");
    let id = answer["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("Chromium did not start: {}", answer["value"]["message"]))
        .to_owned();
    let pid = answer["value"]["capabilities"]["goog:processID"].as_i64().and_then(|p| i32::try_from(p).ok());
    (format!("{driver_url}/session/{id}"), pid)
}
