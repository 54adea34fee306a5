//! Headless Chromium for browser tests: dump a page's DOM or screenshot it, killed at a deadline.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long Chromium may run before the test kills it and fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(30);

/// True when Chromium is installed; otherwise prints why the calling test skips.
pub fn available(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    eprintln!("skipping {test}: {CHROMIUM} is not installed (apt-get install chromium)");
    false
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its stdout, killing
/// it at the deadline. `budget_ms` of virtual time lets the page's timers run.
pub fn run(url: &str, extra: &[String], budget_ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            "--hide-scrollbars",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + BROWSER_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium still running after {BROWSER_DEADLINE:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    assert!(
        status.success(),
        "chromium exited {status}; stderr:\n{stderr}"
    );
    stdout
}

/// The DOM of `url` after `budget_ms` of virtual time.
pub fn dump_dom(url: &str, budget_ms: u32) -> String {
    let dom = run(url, &["--dump-dom".to_owned()], budget_ms);
    assert!(!dom.is_empty(), "chromium dumped nothing for {url}");
    dom
}

/// A `width`×`height` PNG screenshot of `url`, written to `file`.
pub fn screenshot(url: &str, file: &Path, width: u32, height: u32, budget_ms: u32) {
    let _ = std::fs::remove_file(file);
    run(
        url,
        &[
            format!("--screenshot={}", file.display()),
            format!("--window-size={width},{height}"),
        ],
        budget_ms,
    );
    let png =
        std::fs::read(file).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", file.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        file.display()
    );
}
