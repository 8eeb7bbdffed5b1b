//! `convey-relay`: parse settings, log to stderr, serve until SIGINT/SIGTERM.

use anyhow::Context;
use convey_relay::{Config, Server};
use tracing_subscriber::EnvFilter;

#[derive(clap::Parser)]
#[command(
    version,
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "convey_relay=info".into()))
        .init();
    let server = Server::spawn(cli.config).await.context("starting the relay")?;
    tracing::info!(addr = %server.local_addr(), "convey-relay listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the relay");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
