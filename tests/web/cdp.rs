//! A small Chrome DevTools Protocol client: Chromium started with `--remote-debugging-pipe` reads commands on
//! its fd 3 and writes replies and events on its fd 4, each a JSON message ended by a NUL byte. One reader
//! thread files replies by id and keeps events; every page is its own target, attached in flat mode, so pages
//! of tests running in parallel share one browser.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Default)]
struct Inbox {
    replies: HashMap<u64, Value>,
    events: Vec<Value>,
    closed: bool,
}

pub struct Browser {
    to_browser: Mutex<std::io::PipeWriter>,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    next_id: AtomicU64,
    _child: Mutex<Child>,
    stderr: PathBuf,
    pub version: String,
}

/// Moves `fd` to a number of at least 10, so that placing the pipes at 3 and 4 in the child cannot overwrite one
/// with the other (the new descriptor is close-on-exec, as the original was).
fn high_fd(fd: i32) -> std::io::Result<i32> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor this process owns.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if high < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(high)
}

impl Browser {
    /// Starts `program` headless with WebGPU on, its profile in `profile`. Its stderr goes to a file there,
    /// quoted when a call fails.
    pub fn launch(program: &str, profile: &Path) -> Result<Browser, String> {
        std::fs::create_dir_all(profile).map_err(|e| e.to_string())?;
        let (cmd_read, cmd_write) = std::io::pipe().map_err(|e| e.to_string())?;
        let (out_read, out_write) = std::io::pipe().map_err(|e| e.to_string())?;
        let child_in = high_fd(cmd_read.as_raw_fd()).map_err(|e| e.to_string())?;
        let child_out = high_fd(out_write.as_raw_fd()).map_err(|e| e.to_string())?;
        let stderr = profile.join("chromium.log");
        let log = std::fs::File::create(&stderr).map_err(|e| e.to_string())?;
        let mut command = Command::new(program);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(child_in, 3) < 0 || libc::dup2(child_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // SAFETY: closing this process's duplicates; the child has its own copies.
        unsafe {
            libc::close(child_in);
            libc::close(child_out);
        }
        drop((cmd_read, out_write));
        let child = spawned.map_err(|e| format!("starting {program}: {e}"))?;
        let inbox: Arc<(Mutex<Inbox>, Condvar)> = Arc::default();
        let reader_inbox = Arc::clone(&inbox);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out_read);
            let mut message = Vec::new();
            loop {
                message.clear();
                let read = reader.read_until(0, &mut message);
                let (lock, ready) = &*reader_inbox;
                let mut inbox = lock.lock().unwrap();
                match read {
                    Ok(n) if n > 0 && message.last() == Some(&0) => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&message[..n - 1]) {
                            match v.get("id").and_then(Value::as_u64) {
                                Some(id) => {
                                    inbox.replies.insert(id, v);
                                }
                                None => inbox.events.push(v),
                            }
                        }
                        ready.notify_all();
                    }
                    _ => {
                        inbox.closed = true;
                        ready.notify_all();
                        return;
                    }
                }
            }
        });
        let mut browser = Browser {
            to_browser: Mutex::new(cmd_write),
            inbox,
            next_id: AtomicU64::new(1),
            _child: Mutex::new(child),
            stderr,
            version: String::new(),
        };
        let version = browser.call(None, "Browser.getVersion", json!({}))?;
        browser.version = version["product"].as_str().unwrap_or("?").to_string();
        Ok(browser)
    }

    /// The last lines of the browser's stderr, for messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Sends `method` (to `session`, or to the browser) and waits for its result.
    pub fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        bytes.push(0);
        {
            let mut w = self.to_browser.lock().unwrap();
            w.write_all(&bytes).and_then(|_| w.flush()).map_err(|e| {
                format!(
                    "{method}: the browser is gone ({e}); its log:\n{}",
                    self.log_tail()
                )
            })?;
        }
        let (lock, ready) = &*self.inbox;
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut inbox = lock.lock().unwrap();
        loop {
            if let Some(reply) = inbox.replies.remove(&id) {
                if let Some(e) = reply.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(reply["result"].clone());
            }
            if inbox.closed {
                return Err(format!(
                    "{method}: the browser closed its pipe; its log:\n{}",
                    self.log_tail()
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{method}: no reply within {CALL_TIMEOUT:?}"));
            }
            inbox = ready.wait_timeout(inbox, left).unwrap().0;
        }
    }

    /// How many events have come so far (a mark for [`Browser::wait_event`]).
    fn event_mark(&self) -> usize {
        self.inbox.0.lock().unwrap().events.len()
    }

    /// The first event `method` of `session` after `mark`.
    fn wait_event(
        &self,
        session: &str,
        method: &str,
        mark: usize,
        timeout: Duration,
    ) -> Result<Value, String> {
        let (lock, ready) = &*self.inbox;
        let deadline = Instant::now() + timeout;
        let mut inbox = lock.lock().unwrap();
        loop {
            let found = inbox.events[mark..]
                .iter()
                .find(|e| e["method"] == method && e["sessionId"] == session);
            if let Some(e) = found {
                return Ok(e["params"].clone());
            }
            if inbox.closed {
                return Err(format!("waiting for {method}: the browser closed its pipe"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no {method} within {timeout:?}"));
            }
            inbox = ready.wait_timeout(inbox, left).unwrap().0;
        }
    }

    /// A new tab of `width` × `height` CSS pixels, with the page's exceptions and console errors recorded.
    pub fn new_page(&self, width: u32, height: u32) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .unwrap();
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .unwrap();
        let page = Page {
            browser: self,
            session: attached["sessionId"].as_str().unwrap().to_string(),
            target,
        };
        page.call("Page.enable", json!({}));
        page.call("Runtime.enable", json!({}));
        page.call("Log.enable", json!({}));
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        page
    }
}

/// The flags: headless, WebGPU on (on a machine without a GPU, Chromium 156 then offers SwiftShader's), no
/// sandbox (CI runs as root, which the sandbox refuses), and nothing that reaches the network or asks questions.
pub const FLAGS: &[&str] = &[
    "--headless=new",
    "--enable-unsafe-webgpu",
    "--remote-debugging-pipe",
    "--no-sandbox",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
    "--hide-scrollbars",
];

/// One tab.
pub struct Page<'b> {
    browser: &'b Browser,
    session: String,
    target: String,
}

impl Page<'_> {
    #[track_caller]
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.browser
            .call(Some(&self.session), method, params)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `source` in every document this tab loads from now on, before the page's own scripts.
    pub fn before_load(&self, source: &str) {
        self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": source }),
        );
    }

    /// Loads `url` and waits for its load event.
    #[track_caller]
    pub fn navigate(&self, url: &str) {
        let mark = self.browser.event_mark();
        let r = self.call("Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "loading {url}: {r}");
        self.browser
            .wait_event(&self.session, "Page.loadEventFired", mark, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    /// The value of JavaScript expression `expr` (awaited if it is a promise), or the exception it threw.
    pub fn try_eval(&self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            let what = e["exception"]["description"]
                .as_str()
                .or(e["text"].as_str())
                .unwrap_or("?");
            return Err(what.to_string());
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    #[track_caller]
    pub fn eval(&self, expr: &str) -> Value {
        let short: String = expr.chars().take(200).collect();
        self.try_eval(expr)
            .unwrap_or_else(|e| panic!("evaluating {short}: {e}"))
    }

    /// Waits, in the page, until `expr` is truthy (checked every 20 ms), and returns its value.
    #[track_caller]
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Value {
        let ms = timeout.as_millis();
        let quoted = serde_json::to_string(expr).unwrap();
        self.eval(&format!(
            "new Promise((resolve, reject) => {{
                const t0 = performance.now();
                const tick = () => {{
                    let v;
                    try {{ v = ({expr}); }} catch (e) {{ return reject(e); }}
                    if (v) return resolve(v);
                    if (performance.now() - t0 > {ms}) return reject(new Error('timed out waiting for ' + {quoted}));
                    setTimeout(tick, 20);
                }};
                tick();
            }})"
        ))
    }

    /// A real mouse event at (x, y) in CSS pixels: `kind` is mousePressed, mouseMoved or mouseReleased.
    pub fn mouse(&self, kind: &str, (x, y): (f64, f64), pressed: bool) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({
                "type": kind, "x": x, "y": y, "button": "left",
                "buttons": if pressed { 1 } else { 0 }, "clickCount": 1,
            }),
        );
    }

    /// Presses the left button at `from`, moves to `to` in `steps` moves, releases it there.
    pub fn drag(&self, from: (f64, f64), to: (f64, f64), steps: u32) {
        self.mouse("mouseMoved", from, false);
        self.mouse("mousePressed", from, true);
        for s in 1..=steps {
            let t = s as f64 / steps as f64;
            let at = (from.0 + t * (to.0 - from.0), from.1 + t * (to.1 - from.1));
            self.mouse("mouseMoved", at, true);
        }
        self.mouse("mouseReleased", to, false);
    }

    /// A PNG of the whole page.
    pub fn screenshot(&self) -> Vec<u8> {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        base64_decode(r["data"].as_str().unwrap())
    }

    /// The page's uncaught exceptions and console errors so far.
    pub fn errors(&self) -> Vec<String> {
        let inbox = self.browser.inbox.0.lock().unwrap();
        inbox
            .events
            .iter()
            .filter(|e| e["sessionId"] == self.session.as_str())
            .filter_map(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => Some(format!(
                    "exception: {}",
                    e["params"]["exceptionDetails"]["exception"]["description"]
                )),
                Some("Log.entryAdded") if e["params"]["entry"]["level"] == "error" => {
                    Some(format!("console: {}", e["params"]["entry"]["text"]))
                }
                Some("Runtime.consoleAPICalled") if e["params"]["type"] == "error" => {
                    Some(format!("console.error: {}", e["params"]["args"]))
                }
                _ => None,
            })
            .collect()
    }
}

impl Drop for Page<'_> {
    fn drop(&mut self) {
        let _ = self.browser.call(
            None,
            "Target.closeTarget",
            json!({ "targetId": self.target }),
        );
    }
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let mut n = 0u32;
        for (i, d) in digits.iter().enumerate() {
            n |= (*d as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
