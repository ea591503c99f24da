//! Test harness: run the real `usan` binary on a configuration and talk to
//! its API, so the integration tests read like what an operator does.

#![allow(dead_code)] // each area uses part of the harness

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Poll `check` (every 50 ms) until it holds; after `limit`, fail the test
/// naming `what`. Every wait of the tests goes through here or
/// [`Server::wait_until`]: on a condition, with a deadline.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A configuration file in `dir`, from `text` with `{repo}` and `{dir}` filled in.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut text = text.replace("{repo}", &repo().display().to_string()).replace("{dir}", &dir.display().to_string());
    if name.ends_with(".toml") && text.contains("[[assets]]") && !text.contains("[auth]") {
        // Every write needs a token: engine configurations without their own get the tests' admin.
        let sha = usan::api::auth::sha256_hex(ADMIN_TOKEN);
        text.push_str(&format!("\n[auth]\ntokens = [{{ name = \"tester\", role = \"admin\", sha256 = \"{sha}\" }}]\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// The token `write_config` configures (admin, named `tester`); `Server::post` sends it.
pub const ADMIN_TOKEN: &str = "usan-test-admin-token";

/// `usan ARGS...` to completion.
pub fn usan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_usan")).args(args).env("RUST_LOG", "error").output().unwrap()
}

/// A running `usan` process with an API.
pub struct Server {
    child: Child,
    pub base: String,
    client: reqwest::blocking::Client,
}

impl Server {
    /// `usan serve --config CONFIG --listen 127.0.0.1:PORT EXTRA...`, ready when health answers.
    pub fn serve(config: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--config", config.to_str().unwrap(), "--listen", &listen];
        args.extend_from_slice(extra);
        Server::spawn(&args, port)
    }

    /// Any `usan` subcommand that serves the API on `port`.
    pub fn spawn(args: &[&str], port: u16) -> Server {
        Server::spawn_with_env(args, port, &[])
    }

    /// Like [`Server::spawn`], with extra environment variables.
    pub fn spawn_with_env(args: &[&str], port: u16, env: &[(&str, &str)]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_usan"))
            .args(args)
            .envs(env.iter().copied())
            // USAN_TEST_LOG=info (or any RUST_LOG filter) shows the servers' logs.
            .env("RUST_LOG", std::env::var("USAN_TEST_LOG").unwrap_or_else(|_| "error".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        };
        server.wait_until("the API answers", Duration::from_secs(30), |s| s.try_get("/api/v1/health").is_some());
        server
    }

    fn try_get(&self, path: &str) -> Option<Value> {
        let response = self.client.get(format!("{}{path}", self.base)).send().ok()?;
        response.json().ok()
    }

    /// GET, expecting 200 and JSON.
    pub fn get(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.base)).send().unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().unwrap()
    }

    /// GET, returning status and body text.
    pub fn get_raw(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("{}{path}", self.base)).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }

    /// GET with an `Accept` header, returning the `Content-Type` and the body text.
    pub fn get_accepting(&self, path: &str, accept: &str) -> (String, String) {
        let response = self.client.get(format!("{}{path}", self.base)).header("accept", accept).send().unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (kind, response.text().unwrap())
    }

    /// POST a raw body with a content type, as the tests' admin; returns status and JSON body.
    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        self.post_as(Some(ADMIN_TOKEN), path, content_type, body)
    }

    /// POST with `token` as bearer (none: anonymous); returns status and JSON body.
    pub fn post_as(&self, token: Option<&str>, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let mut request =
            self.client.post(format!("{}{path}", self.base)).header("content-type", content_type).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// POST JSON as the tests' admin; returns status and JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, "application/json", serde_json::to_vec(body).unwrap())
    }

    /// Poll `check` until it holds or `limit` passes (then panic naming `what`).
    pub fn wait_until(&self, what: &str, limit: Duration, check: impl Fn(&Server) -> bool) {
        wait_for(what, limit, || check(self));
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        self.child.wait().unwrap()
    }

    /// Wait for the process to exit by itself.
    pub fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let mut status = None;
        wait_for("usan exits by itself", limit, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open a store file read-only for checks.
pub fn open_store(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// Whether a test that needs `what` should run; panics under CI when it is missing.
pub fn required(available: bool, what: &str) -> bool {
    if !available {
        assert!(std::env::var_os("CI").is_none(), "CI is set but {what} is missing");
        eprintln!("skipped: {what} is missing (set CI to make this a failure)");
    }
    available
}

/// The peers' Python (`.venv-peers`, installed by `.ci/run`, or
/// `USAN_PEER_PYTHON`) if it can import `modules`.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let python =
        std::env::var_os("USAN_PEER_PYTHON").map_or_else(|| repo().join(".venv-peers/bin/python"), PathBuf::from);
    let works =
        Command::new(&python).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success());
    let what =
        format!("the Python peers ({modules}; `.ci/run` installs tests/peers/requirements.txt into .venv-peers)");
    required(works, &what).then_some(python)
}

/// The pinned ONNX venv's Python (`.venv-onnx`, made by `.ci/run` from
/// scripts/onnx/requirements.txt) if it can import `modules`.
pub fn onnx_python(modules: &str) -> Option<PathBuf> {
    let python = repo().join(".venv-onnx/bin/python");
    let works =
        Command::new(&python).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success());
    required(
        works,
        &format!("the ONNX venv ({modules}; `.ci/run` installs scripts/onnx/requirements.txt into .venv-onnx)"),
    )
    .then_some(python)
}

/// A peer server (a Python script in tests/peers) listening on `port`; killed when dropped.
pub struct Peer(Child);

impl Peer {
    /// `python tests/peers/SCRIPT PORT`, ready once the port accepts connections.
    pub fn start(python: &Path, script: &str, port: u16) -> Peer {
        Peer::start_with(python, script, port, &[])
    }

    /// `python tests/peers/SCRIPT PORT ARGS...`, ready once the port accepts connections.
    pub fn start_with(python: &Path, script: &str, port: u16, args: &[&str]) -> Peer {
        let child = Command::new(python)
            .arg(repo().join("tests/peers").join(script))
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let peer = Peer(child);
        wait_for(&format!("{script} listens on {port}"), Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Chromium and the peers' Python with Playwright, for browser
/// tests (`.ci/run` installs both); `None` (a skip) off CI when missing.
pub fn browser() -> Option<PathBuf> {
    let chromium = std::env::var_os("USAN_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !required(chromium.exists(), "Chromium (Debian package `chromium`)") {
        return None;
    }
    python_with("playwright.sync_api")
}

/// Where browser tests leave their screenshots: `target/browser-artifacts/NAME`.
pub fn artifacts(name: &str) -> PathBuf {
    let dir = repo().join("target/browser-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `python tests/browser/dashboard.py ARGS...`: its last line of output as
/// JSON, or a panic with what it printed.
pub fn run_browser(python: &Path, args: &[&str]) -> Value {
    let output = Command::new(python).arg(repo().join("tests/browser/dashboard.py")).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("no JSON result ({e}):\n{stdout}\n{stderr}"))
}

/// The value of the first Prometheus line of `server`'s metrics starting with `prefix` (0 when absent).
pub fn metric_of(server: &Server, prefix: &str) -> f64 {
    let (_, text) = server.get_raw("/metrics");
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}
