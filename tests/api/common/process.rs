//! roomd as a separate process (the release path: `roomd serve`), so it can
//! be killed for real, and the load generator run against it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use super::{KEY, SECRET};

/// roomd as a separate process, so it can be killed for real.
pub struct Roomd {
    child: Child,
    pub base: String,
    /// Every line roomd logged (JSON), so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Roomd {
    pub fn start(database_url: &str) -> Self {
        Self::start_with(database_url, "127.0.0.1:0", &[])
    }

    /// On `bind`, with extra `ROOMD__...` settings.
    pub fn start_with(database_url: &str, bind: &str, settings: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomd"))
            .args(["serve", "--config", "/nonexistent/roomd.toml"])
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("LIVEKIT_API_KEY", KEY)
            .env("LIVEKIT_API_SECRET", SECRET)
            .env("ROOMD__SERVER__BIND", bind)
            .envs(settings.iter().copied())
            .env("ROOMD__SERVER__WORKERS", "2")
            .env("ROOMD__LOG__FORMAT", "json")
            .env("ROOMD__LOG__LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start roomd");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("roomd exited before listening")
                .unwrap();
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["message"] == "roomd listening" {
                break log["port"].as_u64().expect("port in the log");
            }
        };
        // Keep draining stdout so roomd never blocks on a full pipe.
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            logs,
        }
    }

    /// Sends `body` signed as LiveKit would; the answer's status.
    pub async fn send(&self, body: &str) -> StatusCode {
        reqwest::Client::new()
            .post(format!("{}/v1/webhooks/livekit", self.base))
            .header("Authorization", super::sign_with(KEY, SECRET, body))
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
            .status()
    }

    /// `GET path` (with `token` as a bearer token); the JSON body.
    pub async fn get(&self, path: &str, token: Option<&str>) -> serde_json::Value {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("a JSON body")
    }

    /// Its log, kept filling after the process is gone.
    pub fn log_handle(&self) -> Arc<Mutex<Vec<String>>> {
        self.logs.clone()
    }

    /// What roomd has logged so far, one JSON line each.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until `/readyz` says 200; every answer before is 503.
    pub async fn ready(self, client: &reqwest::Client) -> Self {
        for _ in 0..500 {
            let status = match client.get(format!("{}/readyz", self.base)).send().await {
                Ok(answer) => answer.status(),
                // CI saw one reset of a pooled connection here once, while a
                // joining node's load was held by a lock (not reproduced):
                // a probe retries, and says so.
                Err(err) => {
                    eprintln!("/readyz: {err:?}; asking again");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            if status == StatusCode::OK {
                return self;
            }
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "/readyz before recovery"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("roomd did not become ready");
    }

    /// Its exit status, if it exits within `within`.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status once roomd has drained.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: sends a signal to our own child, which has not been waited for.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM sent");
        self.child.wait().unwrap()
    }
}

/// A test that fails must not leave its roomd running: the process holds
/// the test's stderr, and CI would wait on it.
impl Drop for Roomd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `roomd-loadgen` printed, and whether it exited 0.
pub struct LoadReport {
    pub success: bool,
    pub stdout: String,
}

impl LoadReport {
    /// A count from the `status:` line (`200`, `503`, `connect`, ...).
    pub fn status(&self, key: &str) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("status: "))
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, v)| v.parse().unwrap())
    }
}

/// Runs `roomd-loadgen webhooks` with `args` in the background.
pub fn loadgen(base: &str, args: &[&str]) -> tokio::task::JoinHandle<LoadReport> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomd-loadgen"));
    command
        .arg("webhooks")
        .args(["--url", base, "--api-key", KEY, "--api-secret", SECRET])
        .args(args);
    tokio::task::spawn_blocking(move || {
        let output = command.output().expect("run roomd-loadgen");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        eprintln!(
            "roomd-loadgen:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        LoadReport {
            success: output.status.success(),
            stdout,
        }
    })
}
