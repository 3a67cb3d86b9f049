use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser;
use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
use vigil::{app, cli::Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands are traces when the OpenTelemetry variables name an endpoint.
    let machines = app::Target::of(&cli.global).map(|t| (t.machines, t.name));
    let (machines, name) =
        machines.unwrap_or((vigil::provider::Machines::NodeContainers, cli.global.name.clone()));
    let mut export = vigil::trace_export::trace_export(&machines, &name).await;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(tracing_subscriber::EnvFilter::new(&cli.global.log)),
        )
        .with(export.layer.take())
        .init();
    export.report();
    let result = app::run(cli).await;
    // Exports the spans still queued before the process ends.
    drop(export);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // One message, its causes after colons: what failed and what to do.
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}
