//! `edgecache warm --list FILE`: prefetch a list of URL paths into PoPs, a bounded number
//! at a time, with a progress bar and a summary naming every failure.

mod plan;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::debug;

pub use plan::{Target, parse_list, parse_target, select, up_targets};

#[derive(Debug, Clone, clap::Args)]
pub struct WarmArgs {
    /// File of URL paths, one per line (`/app.js?v=2`); blank lines and `#` comments are
    /// skipped. `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub list: PathBuf,
    /// Which PoPs to warm: `all`, or PoP names (repeat the flag or separate with commas).
    #[arg(long = "pops", value_name = "all|NAME", num_args = 1.., value_delimiter = ',', default_value = "all")]
    pub pops: Vec<String>,
    /// The router: its `/v1/route` answer lists the PoPs.
    #[arg(long, value_name = "URL")]
    pub router: Option<String>,
    /// A PoP as NAME=URL or a bare URL; repeatable. Without this and `--router`, the PoPs of
    /// `edgecache up`.
    #[arg(long = "pop", value_name = "[NAME=]URL")]
    pub pop_urls: Vec<String>,
    /// Requests in flight at once, over every PoP.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Limit for each request, body included, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// Why `edgecache warm` could not start.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("--list {path}: {source}")]
    ReadList {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {text:?}: {reason}")]
    BadLine {
        file: String,
        line: usize,
        text: String,
        reason: String,
    },
    #[error("{0}: no URL paths in the list")]
    EmptyList(String),
    #[error("--pop {spec:?}: {reason}")]
    BadPop { spec: String, reason: String },
    #[error("--pops: no PoP named {name:?} (known: {known})")]
    UnknownPop { name: String, known: String },
    #[error("--router {url}: {reason}")]
    Router { url: String, reason: String },
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// One URL that could not be warmed on one PoP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmFailure {
    pub path: String,
    pub pop: String,
    pub reason: String,
}

/// What a warm run did.
#[derive(Debug, Default)]
pub struct WarmReport {
    pub requests: usize,
    pub warmed: usize,
    pub bytes: u64,
    pub failures: Vec<WarmFailure>,
}

/// Runs the command: prints the summary on stdout and fails when any request failed.
pub async fn warm_command(args: WarmArgs) -> anyhow::Result<()> {
    let (source, text) = read_list(&args.list)?;
    let paths = parse_list(&text, &source)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(args.timeout).min(Duration::from_secs(5)))
        .timeout(Duration::from_secs(args.timeout))
        .user_agent(concat!("edgecache-warm/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(WarmError::Client)?;
    let targets = select(targets(&args, &http).await?, &args.pops)?;
    let total = paths.len() * targets.len();
    let visible = std::io::stdout().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        if visible {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
    {
        bar.set_style(style);
    }
    let started = Instant::now();
    let report = warm(&http, &paths, &targets, usize::from(args.concurrency), &bar).await;
    bar.finish_and_clear();
    print_summary(&report, paths.len(), targets.len(), started.elapsed());
    if report.failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} warm requests failed",
            report.failures.len(),
            report.requests
        )
    }
}

fn read_list(path: &PathBuf) -> Result<(String, String), WarmError> {
    let shown = path.display().to_string();
    let text = if shown == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    let text = text.map_err(|source| WarmError::ReadList {
        path: shown.clone(),
        source,
    })?;
    Ok((shown, text))
}

/// The PoPs to choose from: `--pop`s, else the router's list, else `edgecache up`'s.
async fn targets(args: &WarmArgs, http: &reqwest::Client) -> Result<Vec<Target>, WarmError> {
    if !args.pop_urls.is_empty() {
        return args.pop_urls.iter().map(|s| parse_target(s)).collect();
    }
    let Some(router) = &args.router else {
        return Ok(up_targets());
    };
    let router = router.trim_end_matches('/');
    let answer = crate::client::fetch_route(http, router, Duration::from_secs(5))
        .await
        .map_err(|reason| WarmError::Router {
            url: router.to_owned(),
            reason,
        })?;
    // Every PoP the router knows, healthy or not: one that is down is a failure to report.
    let mut targets: Vec<Target> = answer
        .pops
        .into_iter()
        .filter(|p| p.name != "origin")
        .map(|p| Target {
            name: p.name,
            url: p.url.trim_end_matches('/').to_owned(),
        })
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(targets)
}

/// Fetches every path from every target, at most `concurrency` at once, each URL on every
/// PoP before the next URL.
pub async fn warm(
    http: &reqwest::Client,
    paths: &[String],
    targets: &[Target],
    concurrency: usize,
    bar: &ProgressBar,
) -> WarmReport {
    let jobs = paths
        .iter()
        .flat_map(|path| targets.iter().map(move |target| (path, target)));
    let mut results = futures_util::stream::iter(jobs)
        .map(|(path, target)| async move {
            let result = fetch_one(http, target, path).await;
            (path, target, result)
        })
        .buffer_unordered(concurrency.max(1));
    let mut report = WarmReport::default();
    while let Some((path, target, result)) = results.next().await {
        report.requests += 1;
        match result {
            Ok(bytes) => {
                report.warmed += 1;
                report.bytes += bytes;
            }
            Err(reason) => {
                debug!(pop = %target.name, %path, %reason, "warm request failed");
                bar.set_message(format!("{} failed", report.failures.len() + 1));
                report.failures.push(WarmFailure {
                    path: path.clone(),
                    pop: target.name.clone(),
                    reason,
                });
            }
        }
        bar.inc(1);
    }
    report
        .failures
        .sort_by(|a, b| (&a.path, &a.pop).cmp(&(&b.path, &b.pop)));
    report
}

/// One GET, body read to the end so the PoP stores all of it; the body size on success.
async fn fetch_one(http: &reqwest::Client, target: &Target, path: &str) -> Result<u64, String> {
    let url = format!("{}{path}", target.url);
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| crate::client::describe(&e))?;
    let status = response.status();
    let cache_status = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut bytes = 0u64;
    let mut body = response;
    while let Some(chunk) = body.chunk().await.map_err(|e| {
        format!(
            "body broke after {bytes} bytes: {}",
            crate::client::describe(&e)
        )
    })? {
        bytes += chunk.len() as u64;
    }
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    let cache_status = cache_status.ok_or("no Cache-Status header: not an edgecache PoP?")?;
    if !cached(&cache_status) {
        return Err(format!("not stored (Cache-Status: {cache_status})"));
    }
    debug!(pop = %target.name, %path, bytes, %cache_status, "warmed");
    Ok(bytes)
}

/// True when the PoP's own `Cache-Status` entry (the last one: closest to the client,
/// RFC 9211 §2) says the response is now in its cache: a hit, or stored.
pub fn cached(cache_status: &str) -> bool {
    let own = cache_status.rsplit(',').next().unwrap_or_default();
    own.split(';')
        .skip(1)
        .map(str::trim)
        .any(|param| param == "hit" || param == "stored")
}

fn print_summary(report: &WarmReport, paths: usize, pops: usize, took: Duration) {
    println!(
        "warmed {} of {} ({paths} URL{} × {pops} PoP{}) in {:.2} s, {} bytes",
        report.warmed,
        report.requests,
        if paths == 1 { "" } else { "s" },
        if pops == 1 { "" } else { "s" },
        took.as_secs_f64(),
        report.bytes,
    );
    if report.failures.is_empty() {
        return;
    }
    println!("failed ({}):", report.failures.len());
    let width = report
        .failures
        .iter()
        .map(|f| f.path.len())
        .max()
        .unwrap_or(0);
    let pop_width = report
        .failures
        .iter()
        .map(|f| f.pop.len())
        .max()
        .unwrap_or(0);
    for f in &report.failures {
        println!("  {:<width$}  {:<pop_width$}  {}", f.path, f.pop, f.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pops_own_entry_counts() {
        assert!(cached(
            "edgecache-us-east; fwd=uri-miss; fwd-status=200; stored"
        ));
        assert!(cached("edgecache-us-east; hit; ttl=3522"));
        assert!(cached(
            "edgecache-shield; fwd=uri-miss; stored, edgecache-us-east; hit"
        ));
        assert!(!cached("edgecache-us-east; fwd=request; fwd-status=200"));
        assert!(!cached(
            "edgecache-shield; hit, edgecache-us-east; fwd=request"
        ));
        assert!(!cached(
            "edgecache-us-east; fwd=uri-miss; detail=stored-not"
        ));
    }
}
