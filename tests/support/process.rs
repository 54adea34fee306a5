//! The `edgecache` binary as a child process: its stdout and stderr read to the end on
//! their own threads (a server whose pipes nobody reads would block or lose lines), its
//! lines handed over through channels, the process killed when the test ends.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for a line the binary should print.
const LINE_WAIT: Duration = Duration::from_secs(10);

pub struct Process {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line taken so far, for failure messages.
    seen_stderr: Vec<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends each line of `pipe` until it closes or the receiver is gone.
fn forward(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            // Nobody may listen any more: keep draining so the child never sees a full pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

impl Process {
    /// Starts `edgecache ARGS` with `RUST_LOG` unset (its default log level).
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgecache"));
        command.args(args).env_remove("RUST_LOG");
        Self::spawn(command)
    }

    /// `edgecache origin` serving `site` (one `name` file with `body` written into it) on
    /// a free loopback port; returns it and its URL. The directory lives as long as `site`.
    pub fn origin(site: &std::path::Path, name: &str, body: &str) -> (Self, String) {
        std::fs::write(site.join(name), body).unwrap();
        let root = site.to_str().unwrap();
        let mut origin = Self::start(&["origin", "--root", root, "--listen", "127.0.0.1:0"]);
        let url = origin.line_after("listening on ");
        (origin, url)
    }

    /// `edgecache [GLOBAL…] edge` in front of `origin_url` as PoP `pop`, listener and admin
    /// on free loopback ports, `RUST_LOG` unset; start it with [`Process::spawn`].
    pub fn edge_command(global: &[&str], origin_url: &str, pop: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgecache"));
        command
            .args(global)
            .args(["edge", "--origin", origin_url, "--pop", pop])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .env_remove("RUST_LOG");
        command
    }

    /// Starts `command` with both output pipes read.
    pub fn spawn(command: Command) -> Self {
        Self::spawn_with_stdout(command, Stdio::piped())
    }

    /// Starts `command` with its stdout going to `stdout` (only a pipe is read back).
    pub fn spawn_with_stdout(mut command: Command, stdout: Stdio) -> Self {
        let mut child = command
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgecache");
        let stdout = match child.stdout.take() {
            Some(pipe) => forward(pipe),
            None => mpsc::channel().1,
        };
        let stderr = forward(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
            seen_stderr: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, which must start with `prefix`; returns the rest of it.
    pub fn line_after(&mut self, prefix: &str) -> String {
        let line = match self.stdout.recv_timeout(LINE_WAIT) {
            Ok(line) => line,
            Err(e) => panic!(
                "no stdout line {prefix:?} ({e}); stderr so far:\n{}",
                self.drain_stderr()
            ),
        };
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .trim()
            .to_owned()
    }

    /// The next stderr line, waiting until `deadline`; `None` once it has passed.
    pub fn stderr_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = self.stderr.recv_timeout(left).ok()?;
        self.seen_stderr.push(line.clone());
        Some(line)
    }

    /// Waits (at most 10 s) for a stderr line containing `needle` and returns it.
    pub fn stderr_containing(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + LINE_WAIT;
        while let Some(line) = self.stderr_line(deadline) {
            if line.contains(needle) {
                return line;
            }
        }
        panic!(
            "no stderr line with {needle:?}; stderr:\n{}",
            self.seen_stderr.join("\n")
        )
    }

    /// Everything on stderr until now, for a failure message.
    fn drain_stderr(&mut self) -> String {
        self.seen_stderr.extend(self.stderr.try_iter());
        self.seen_stderr.join("\n")
    }
}
