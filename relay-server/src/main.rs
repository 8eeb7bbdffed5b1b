//! `convey-relay`: parse settings, log to stderr, serve until SIGINT/SIGTERM.

use anyhow::Context;
use convey_relay::{Config, Server, config::LogFormat};
use tracing_subscriber::EnvFilter;

#[derive(clap::Parser)]
#[command(
    version = concat!(env!("CARGO_PKG_VERSION"), " (protocol convey-v1)"),
    about = "convey relay: rendezvous and BitTorrent tracker for convey transfers"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Check that a relay with these settings answers `/healthz`, then exit (0 healthy, 1 not).
    #[arg(long)]
    health_check: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = match convey_relay::config::file::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(convey_relay::config::file::FileError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if cli.health_check {
        if let Err(e) = convey_relay::health::check(cli.config.listen).await {
            eprintln!("unhealthy: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    // A log line that cannot be written (stderr closed by a log collector) is dropped; the
    // default would report it with eprintln!, which panics on a closed stderr.
    // Colour only on a terminal: raw escape codes are noise in `docker logs` and journals.
    let logs = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "convey_relay=info".into()));
    match cli.config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // Listen for the stop signals before announcing anything, so a SIGTERM sent as soon as
    // the relay says it listens is a graceful stop, not the default kill.
    let stop = stop_signals().context("listening for SIGINT/SIGTERM")?;
    let server = Server::spawn(cli.config).await.context("starting the relay")?;
    tracing::info!(addr = %server.local_addr(), "convey-relay listening");
    stop.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; the handlers are installed when this returns.
#[cfg(unix)]
fn stop_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn stop_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
