//! The `edgecache` command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = edgecache::cli::Cli::parse();
    edgecache::telemetry::init(cli.log_format);
    match edgecache::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgecache: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
