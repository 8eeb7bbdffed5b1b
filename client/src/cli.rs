//! Command-line surface of `convey`: arguments, prompts, and how events are shown.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use convey::{
    Code, Error, Event, EventSink, OfferSummary, ReceiveOptions, RelayAddr, SendOptions,
    embedded::EmbeddedRelay,
};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "convey",
    version,
    about = "Send files with a short code, end-to-end encrypted, peer to peer over BitTorrent"
)]
pub(crate) struct Cli {
    /// More logging on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send a file; prints the code the receiver needs.
    Send(SendArgs),
    /// Receive a file with the code the sender printed.
    Receive(ReceiveArgs),
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Relay address, HOST:PORT or http(s)://HOST:PORT. Without one, convey runs its own.
    #[arg(long, env = "CONVEY_RELAY")]
    relay: Option<RelayAddr>,
    /// Use this pre-agreed code instead of a generated one (e.g. 7-pilot-planet).
    #[arg(long, env = "CONVEY_CODE", hide_env_values = true)]
    code: Option<Code>,
    /// Cap the upload rate, in bytes per second (suffixes K, M, G; e.g. 20M).
    #[arg(long, value_parser = parse_rate)]
    limit_rate: Option<std::num::NonZeroU32>,
    /// The file to send.
    file: PathBuf,
}

#[derive(Debug, Args)]
struct ReceiveArgs {
    /// Relay address, HOST:PORT or http(s)://HOST:PORT [default: 127.0.0.1:4790].
    #[arg(long, env = "CONVEY_RELAY")]
    relay: Option<RelayAddr>,
    /// Folder to save into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Accept the offer without asking.
    #[arg(short, long)]
    yes: bool,
    /// Replace an existing file of the same name.
    #[arg(long)]
    overwrite: bool,
    /// How long to wait for the sender to show up (e.g. 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// The code the sender printed (or set CONVEY_CODE to keep it out of the process list).
    #[arg(env = "CONVEY_CODE", hide_env_values = true)]
    code: Code,
}

pub(crate) fn init_logging(verbose: u8) {
    let default = match verbose {
        // librqbit reports routine peer churn (and its own shutdown) as warnings and errors;
        // what matters to the user reaches them as convey's own one-line error.
        0 => "off,convey=warn,convey_relay=warn",
        1 => "warn,convey=debug,convey_relay=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

pub(crate) async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Send(args) => send(args).await,
        Command::Receive(args) => receive(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(err.downcast_ref::<Error>().map_or(1, Error::exit_code))
        }
    }
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let (embedded, relay) = match args.relay {
        Some(r) => (None, r),
        None => {
            let e = EmbeddedRelay::start().await?;
            let local = e.local_addr();
            (Some(e), local)
        }
    };
    let receive_hint = match &embedded {
        Some(e) => match e.lan_addr() {
            Some(lan) => format!("convey receive --relay {lan} "),
            None => format!("convey receive --relay {} ", e.local_addr()),
        },
        None => format!("convey receive --relay {relay} "),
    };
    let on_default_port = embedded
        .as_ref()
        .is_some_and(|e| e.port() == convey::embedded::DEFAULT_PORT);
    let progress = Progress::new("sent");
    let events: EventSink = Arc::new(move |ev| match ev {
        Event::Code { code } => {
            println!("Code: {code}");
            println!("On the other machine run:  {receive_hint}{code}");
            if on_default_port {
                println!("(on this machine:          convey receive {code})");
            }
        }
        Event::Waiting => eprintln!("Waiting for the receiver…"),
        other => progress.show(&other),
    });
    let opts = SendOptions {
        relay,
        code: args.code,
        path: args.file.clone(),
        upload_limit: args.limit_rate,
    };
    let result = convey::send(opts, events).await;
    if let Some(e) = embedded {
        e.shutdown().await;
    }
    let report = result?;
    println!(
        "Sent {} ({}) in {:.1}s",
        args.file.display(),
        human_bytes(report.bytes),
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

async fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    let relay = args.relay.unwrap_or_else(convey::embedded::default_relay);
    let yes = args.yes;
    let accept = Arc::new(move |offer: &OfferSummary| yes || prompt(offer));
    let progress = Progress::new("received");
    let events: EventSink = Arc::new(move |ev| match ev {
        Event::Waiting => eprintln!("Waiting for the sender…"),
        other => progress.show(&other),
    });
    let opts = ReceiveOptions {
        relay,
        code: args.code,
        out_dir: args.out,
        overwrite: args.overwrite,
        wait: args.wait,
        accept,
    };
    let report = convey::receive(opts, events).await?;
    let secs = report.elapsed.as_secs_f64();
    println!(
        "Received {} ({}) in {:.1}s ({:.0} MB/s)",
        report.path.display(),
        human_bytes(report.bytes),
        secs,
        report.bytes as f64 / secs.max(1e-6) / 1e6
    );
    Ok(())
}

/// Ask on the terminal. Without one, refuse and say how to accept non-interactively.
fn prompt(offer: &OfferSummary) -> bool {
    let what = format!("{} ({})", offer.names.join(", "), human_bytes(offer.bytes));
    if !std::io::stdin().is_terminal() {
        eprintln!("Offered {what}; not accepting without a terminal to ask on. Use --yes to accept.");
        return false;
    }
    eprint!("Receive {what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

/// A one-line progress display on a terminal; silent otherwise.
struct Progress {
    verb: &'static str,
    tty: bool,
}

impl Progress {
    fn new(verb: &'static str) -> Self {
        Self {
            verb,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, ev: &Event) {
        if !self.tty {
            return;
        }
        if let Event::Progress { bytes, total } = ev {
            let pct = if *total == 0 {
                100.0
            } else {
                *bytes as f64 * 100.0 / *total as f64
            };
            eprint!(
                "\r{} {} of {} ({pct:.0}%)   ",
                self.verb,
                human_bytes(*bytes),
                human_bytes(*total)
            );
            if bytes == total {
                eprintln!();
            }
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn parse_rate(s: &str) -> Result<std::num::NonZeroU32, String> {
    let (digits, mult) = match s.trim().to_ascii_uppercase().strip_suffix(['K', 'M', 'G']) {
        Some(d) => {
            let m = match s.trim().chars().last().map(|c| c.to_ascii_uppercase()) {
                Some('K') => 1u64 << 10,
                Some('M') => 1 << 20,
                _ => 1 << 30,
            };
            (d.to_owned(), m)
        }
        None => (s.trim().to_owned(), 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 500K, 20M or 1G"))?;
    n.checked_mul(mult)
        .and_then(|v| u32::try_from(v).ok())
        .and_then(std::num::NonZeroU32::new)
        .ok_or_else(|| format!("{s:?} must be between 1 byte/s and 4G"))
}
