use anyhow::Result;
use clap::Parser;
use vigil::{app, cli::Cli};

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.global.log))
        .with_writer(std::io::stderr)
        .init();
    app::run(cli).await
}
