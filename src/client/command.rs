//! `edgecache get PATH`: fetch one path through the fallback client and stream its body.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::{ClientConfig, FallbackClient, FallbackResponse};

#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    /// URL path with its query, e.g. `/img/logo.png?v=2`.
    #[arg(value_name = "PATH")]
    pub path: String,
    /// The router, which orders the PoPs nearest healthy first.
    #[arg(long, value_name = "URL")]
    pub router: Option<String>,
    /// A PoP base URL, nearest first; repeatable. Used without a router or when it fails.
    #[arg(long = "pop", value_name = "URL")]
    pub pops: Vec<String>,
    /// The origin, tried after every PoP.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8000")]
    pub origin: String,
    /// Write the body to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the status line and headers before the body.
    #[arg(long, short = 'i')]
    pub include: bool,
}

impl GetArgs {
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            router: self.router.clone(),
            pops: self.pops.clone(),
            origin: self.origin.clone(),
            ..ClientConfig::default()
        }
    }
}

/// Fetches `args.path` and streams the body to stdout or `--output`; says on stderr which
/// URL served it. Like curl without `-f`, any response (even 4xx/5xx) is a success; no
/// response at all is an error listing each candidate's failure.
pub async fn get_command(args: GetArgs) -> anyhow::Result<()> {
    let client = FallbackClient::new(args.client_config())?;
    let served = client.get(&args.path).await?;
    report(&served);
    let mut out: Box<dyn AsyncWrite + Unpin + Send> = match &args.output {
        Some(path) => Box::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let FallbackResponse {
        served_by,
        mut response,
        ..
    } = served;
    if args.include {
        out.write_all(&head(&response)).await?;
    }
    let mut written: u64 = 0;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("body from {served_by} broke after {written} bytes"))?
    {
        out.write_all(&chunk)
            .await
            .context("cannot write the body")?;
        written += chunk.len() as u64;
    }
    out.flush().await.context("cannot write the body")?;
    Ok(())
}

/// The command's own stderr lines: what failed, then who served.
fn report(served: &FallbackResponse) {
    let mut err = std::io::stderr().lock();
    for failure in &served.failures {
        let _ = writeln!(err, "edgecache get: {failure}");
    }
    let _ = writeln!(
        err,
        "edgecache get: {} from {} (attempt {})",
        served.response.status(),
        served.served_by,
        served.attempts
    );
}

/// `HTTP/1.1 200 OK` and the headers, as curl `-i` prints them.
fn head(response: &reqwest::Response) -> Vec<u8> {
    let mut out = format!("{:?} {}\r\n", response.version(), response.status()).into_bytes();
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        get: GetArgs,
    }

    #[test]
    fn flags_become_the_client_config() {
        let cli = Cli::parse_from([
            "get",
            "/a.css?v=1",
            "--pop",
            "http://127.0.1.1:8080",
            "--pop",
            "http://127.0.2.1:8080",
            "-i",
        ]);
        assert_eq!(cli.get.path, "/a.css?v=1");
        assert!(cli.get.include);
        let config = cli.get.client_config();
        assert_eq!(
            config.pops,
            ["http://127.0.1.1:8080", "http://127.0.2.1:8080"]
        );
        assert_eq!(config.origin, "http://127.0.0.1:8000");
        assert_eq!(config.router, None);
    }
}
