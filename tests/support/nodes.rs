//! Downpour roles started as child processes of a test, with their standard
//! error collected line by line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The cluster token every process gets through DOWNPOUR_TOKEN.
pub(crate) const TOKEN: &str = "test-token-0123456789";

/// A child process whose standard error is collected line by line.
pub(crate) struct Node {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    pub(crate) log: Vec<String>,
}

impl Node {
    pub(crate) fn start(name: &'static str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_downpour"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("DOWNPOUR_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start downpour");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name,
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for the "... listening address=HOST:PORT" line and returns the
    /// address.
    pub(crate) fn listening_address(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            self.log.push(line.clone());
            if line.contains("listening")
                && let Some(rest) = line.split("address=").nth(1)
            {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        panic!(
            "{} never reported its address:\n{}",
            self.name,
            self.log.join("\n")
        );
    }

    /// Waits for a log line that contains `text` and returns it.
    pub(crate) fn wait_for_line(&mut self, text: &str, deadline: Instant) -> String {
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            self.log.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
        panic!(
            "{} never logged {text:?}:\n{}",
            self.name,
            self.log.join("\n")
        );
    }

    pub(crate) fn wait(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.log.push(line);
            }
            if let Some(status) = self.child.try_wait().expect("poll child") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                    self.log.push(line);
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit in time:\n{}",
                    self.name,
                    self.log.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

pub(crate) fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}
