use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser;
use vigil::{app, cli::Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.global.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match app::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // One message, its causes after colons: what failed and what to do.
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}
