//! Command-line surface of `convey`: arguments, config file, prompts, and the exit code.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::{Args, CommandFactory, Parser, Subcommand};
use convey::{
    Code, Error, Event, OfferSummary, Payload, ReceiveOptions, Received, Receivers, RelayAddr, SendOptions,
    Transport, embedded::EmbeddedRelay,
};
use tracing_subscriber::EnvFilter;

mod config;
mod output;

use config::Config;
use output::{Mode, Output, human_bytes};

/// What `--version` prints: the release and the wire protocol it speaks.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (protocol convey-v1)");

/// Exit code for bad usage, as clap uses.
const USAGE: u8 = 2;
/// Exit code after Ctrl-C (128 + SIGINT), as shells use.
const INTERRUPTED: u8 = 130;
/// Top-level names listed in the "Received" line.
const SHOWN_NAMES: usize = 5;
/// Default for how long a receiver waits for the sender.
const RECEIVE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(
    name = "convey",
    version = VERSION,
    about = "Send files with a short code, end-to-end encrypted, peer to peer over BitTorrent"
)]
pub(crate) struct Cli {
    /// More logging on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Print one JSON event per line instead of text (schema in the README).
    #[arg(long, global = true, conflicts_with = "quiet")]
    json: bool,
    /// Print only the code (sender) and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Config file [default: ~/.config/convey/config.toml, if it exists].
    #[arg(long, global = true, env = "CONVEY_CONFIG")]
    config: Option<PathBuf>,
    /// With no relay configured: a sender advertises its embedded relay on the local
    /// network (multicast DNS), a receiver looks there for its code's number (`off`: this
    /// machine only).
    #[arg(long, global = true, env = "CONVEY_LAN", default_value = "on", value_parser = ["on", "off"])]
    lan: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send files or folders (or `-` for standard input, or --text); prints the code.
    Send(SendArgs),
    /// Receive with the code the sender printed.
    Receive(ReceiveArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

/// How to reach a private or TLS relay; the same for both commands.
#[derive(Debug, Args)]
struct RelayAccess {
    /// Access token of a private relay (needed to open a code there).
    #[arg(long, env = "CONVEY_RELAY_TOKEN", hide_env_values = true)]
    relay_token: Option<String>,
    /// Trust this CA certificate (PEM) for an https:// relay, besides the system's roots.
    #[arg(long, env = "CONVEY_RELAY_CA")]
    relay_ca: Option<PathBuf>,
}

impl RelayAccess {
    /// `relay` with the token and CA from the flags, else from the config file.
    fn apply(self, relay: RelayAddr, config: &Config) -> RelayAddr {
        relay
            .with_token(self.relay_token.or_else(|| config.relay_token.clone()))
            .with_ca(self.relay_ca.or_else(|| config.relay_ca.clone()))
    }
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Relay address, HOST:PORT or http(s)://HOST:PORT. Without one, convey runs its own.
    #[arg(long, env = "CONVEY_RELAY")]
    relay: Option<RelayAddr>,
    #[command(flatten)]
    access: RelayAccess,
    /// Use this pre-agreed code instead of a generated one (e.g. 7-pilot-planet).
    #[arg(long, env = "CONVEY_CODE", hide_env_values = true)]
    code: Option<Code>,
    /// Cap the upload rate, in bytes per second (suffixes K, M, G; e.g. 20M).
    #[arg(long, value_parser = parse_rate)]
    limit_rate: Option<std::num::NonZeroU32>,
    /// How long to wait for the receiver (e.g. 10m) [default: until interrupted].
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    /// Send this text instead of files.
    #[arg(long, conflicts_with = "paths")]
    text: Option<String>,
    /// Also show the code as a QR code.
    #[arg(long)]
    qr: bool,
    /// Paths the receiver may use: auto (direct, then WebRTC, then the relay tunnel), direct, webrtc, relay.
    #[arg(long, default_value = "auto", env = "CONVEY_TRANSPORT")]
    transport: Transport,
    /// How many receivers the code is for: a number (they fetch from each other too), or
    /// `any` (anyone with the code until Ctrl-C, or until --wait passes with nobody
    /// transferring). More than one needs a three-word code.
    #[arg(long, default_value = "1", env = "CONVEY_RECEIVERS")]
    receivers: Receivers,
    /// Send the content as it is: no zstd compression (which is skipped anyway for parts
    /// that do not shrink).
    #[arg(long, env = "CONVEY_NO_COMPRESS")]
    no_compress: bool,
    /// Files and folders to send, or `-` for standard input.
    #[arg(required_unless_present = "text")]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct ReceiveArgs {
    /// Relay address, HOST:PORT or http(s)://HOST:PORT [default: 127.0.0.1:4790].
    #[arg(long, env = "CONVEY_RELAY")]
    relay: Option<RelayAddr>,
    #[command(flatten)]
    access: RelayAccess,
    /// Folder to save into [default: the current folder].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Accept the offer without asking.
    #[arg(short, long)]
    yes: bool,
    /// Replace existing files of the same names.
    #[arg(long)]
    overwrite: bool,
    /// Write a received stream to the terminal even if it holds binary data or escape
    /// sequences (without it, such a stream stops with a message, as curl does).
    #[arg(long)]
    to_terminal: bool,
    /// How long to wait for the sender to show up (e.g. 30s, 5m) [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    /// Paths to use: auto (direct, then WebRTC, then the relay tunnel), direct, webrtc, relay.
    #[arg(long, default_value = "auto", env = "CONVEY_TRANSPORT")]
    transport: Transport,
    /// In a transfer to several receivers: after receiving, keep serving the others for at
    /// most this long (until the sender says everyone is done) [default: 5m; 0 to stop at once].
    #[arg(long, value_parser = humantime::parse_duration)]
    seed_for: Option<Duration>,
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
    // An unwritable log line is dropped rather than reported with eprintln!, which would
    // panic when stderr is closed.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_env_filter(filter)
        .init();
}

pub(crate) async fn run(cli: Cli) -> ExitCode {
    let mode = if cli.json {
        Mode::Json
    } else if cli.quiet {
        Mode::Quiet
    } else {
        Mode::Human
    };
    let (verb, hold_json) = match cli.command {
        Command::Send(_) => ("sent", false),
        _ => ("received", true),
    };
    let out = Output::new(mode, verb, hold_json);
    let lan = cli.lan == "on";
    let work = async {
        match Config::load(cli.config) {
            Err(e) => Err(e.context(UsageError)),
            Ok(config) => match cli.command {
                Command::Send(args) => send(args, &config, &out, lan).await,
                Command::Receive(args) => receive(args, &config, &out, lan).await,
                Command::Completions { shell } => {
                    clap_complete::generate(shell, &mut Cli::command(), "convey", &mut std::io::stdout());
                    Ok(())
                }
            },
        }
    };
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::Error::new(Interrupted)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<Interrupted>() && MAY_CLOSE.load(std::sync::atomic::Ordering::Relaxed) => {
            out.say("Stopped: the receivers finish from each other");
            ExitCode::SUCCESS
        }
        Err(err) => {
            let code = match err.downcast_ref::<Error>() {
                Some(e) => e.exit_code(),
                None if err.is::<Interrupted>() => INTERRUPTED,
                None if err.is::<UsageError>() => USAGE,
                None => 1,
            };
            out.error(&format!("{err:#}"), code);
            ExitCode::from(code)
        }
    }
}

/// Set once a sender of several receivers was told they hold every piece: Ctrl-C after
/// that is the expected way to leave, not a failure.
static MAY_CLOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; a receiver keeps what it has, so running both commands again resumes")]
struct Interrupted;

/// Marks an error as bad usage (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("bad configuration")]
struct UsageError;

async fn send(args: SendArgs, config: &Config, out: &Arc<Output>, lan: bool) -> anyhow::Result<()> {
    let payload = match (args.text, args.paths.as_slice()) {
        (Some(text), _) => Payload::Text(text),
        (None, [one]) if one.as_os_str() == "-" => Payload::Stdin,
        (None, paths) if paths.iter().any(|p| p.as_os_str() == "-") => {
            return Err(
                anyhow::anyhow!("`-` (standard input) cannot be mixed with files").context(UsageError)
            );
        }
        (None, paths) => Payload::Paths(paths.to_vec()),
    };
    let (embedded, relay) = match args.relay.or(config.relay()?) {
        Some(r) => (None, args.access.apply(r, config)),
        None => {
            let e = EmbeddedRelay::start().await?;
            let local = e.local_addr();
            (Some(e), local)
        }
    };
    let lan_addr = embedded.as_ref().and_then(EmbeddedRelay::lan_addr);
    let receive_hint = match (&embedded, &lan_addr) {
        (Some(_), Some(lan)) => format!("convey receive --relay {lan} "),
        (Some(e), None) => format!("convey receive --relay {} ", e.local_addr()),
        (None, _) => format!("convey receive --relay {relay} "),
    };
    // The relay's page receives files and texts, for one receiver or as one of several.
    let page_relay = match &lan_addr {
        Some(lan) => lan.clone(),
        None => relay.clone(),
    };
    let page = (!matches!(payload, Payload::Stdin)).then_some(page_relay);
    let on_default_port = embedded
        .as_ref()
        .is_some_and(|e| e.port() == convey::embedded::DEFAULT_PORT);
    // An embedded relay on the LAN is advertised, so the other side needs only the code.
    let advertise = embedded
        .as_ref()
        .filter(|_| lan && lan_addr.is_some())
        .map(EmbeddedRelay::port);
    let advertised: Arc<std::sync::Mutex<Option<convey::lan::Advertisement>>> = Arc::default();
    let (qr, mode) = (args.qr, out.mode);
    let waiting_for = if args.receivers.many() {
        "Waiting for the receivers…"
    } else {
        "Waiting for the receiver…"
    };
    let shown = out.clone();
    let advert = advertised.clone();
    let events = out.sink(move |ev| match ev {
        Event::Code { code } => {
            if let (Some(port), Ok(parsed)) = (advertise, code.parse::<Code>()) {
                match convey::lan::Advertisement::start(port, parsed.nameplate()) {
                    Ok(a) => *advert.lock().unwrap_or_else(|e| e.into_inner()) = Some(a),
                    Err(err) => tracing::warn!(%err, "cannot advertise on the local network"),
                }
            }
            let advertised = advert.lock().unwrap_or_else(|e| e.into_inner()).is_some();
            let fallback = format!("{receive_hint}{code}");
            let link = page.as_ref().map(|p| p.page_url(code));
            let receive = if advertised { format!("convey receive {code}") } else { fallback.clone() };
            if mode == Mode::Json {
                shown.json(&serde_json::json!({"event": "code", "code": code, "receive": receive, "receive_with_relay": fallback, "page": link}));
                return true;
            }
            // Written, not println!: a reader that takes only the first line (`| head -1`)
            // and goes away must not make the sender panic on the next one.
            let mut text = format!("Code: {code}\n");
            if mode == Mode::Human {
                text.push_str(&format!("On the other machine run:  {receive}\n"));
                if advertised {
                    text.push_str(&format!("(if it finds no sender:    {fallback})\n"));
                } else if on_default_port {
                    text.push_str(&format!("(on this machine:          convey receive {code})\n"));
                }
                if let Some(link) = &link {
                    text.push_str(&format!("Or open in a browser:      {link}\n"));
                }
            }
            if qr {
                text.push_str(&qr_text(code));
            }
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
            true
        }
        Event::Waiting if mode != Mode::Json => {
            shown.say(waiting_for);
            true
        }
        Event::AllHeld => {
            MAY_CLOSE.store(true, std::sync::atomic::Ordering::Relaxed);
            false
        }
        Event::Connected => {
            // The nameplate is taken now: stop offering it on the LAN.
            if let Some(a) = &*advert.lock().unwrap_or_else(|e| e.into_inner()) {
                a.withdraw();
            }
            false
        }
        _ => false,
    });
    let opts = SendOptions {
        relay,
        code: args.code,
        payload,
        upload_limit: args.limit_rate.or(config.limit_rate()?),
        wait: args.wait.or(config.send_wait()),
        transport: args.transport,
        receivers: args.receivers,
        compress: !args.no_compress,
    };
    let result = convey::send(opts, events).await;
    let advertisement = advertised.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(a) = advertisement {
        a.stop().await;
    }
    if let Some(e) = embedded {
        e.shutdown().await;
    }
    let report = result?;
    out.say(&format!(
        "Sent {} in {:.1}s",
        human_bytes(report.bytes),
        report.elapsed.as_secs_f64()
    ));
    Ok(())
}

/// The code as a QR code drawn with text, or a note that it cannot be drawn.
fn qr_text(code: &str) -> String {
    match qrcode::QrCode::new(code.as_bytes()) {
        Ok(qr) => format!(
            "{}\n",
            qr.render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build()
        ),
        Err(err) => format!("(cannot draw a QR code: {err})\n"),
    }
}

async fn receive(args: ReceiveArgs, config: &Config, out: &Arc<Output>, lan: bool) -> anyhow::Result<()> {
    let relay = match args.relay.or(config.relay()?) {
        Some(r) => args.access.apply(r, config),
        None => {
            let window = lan.then_some(convey::lan::LOOK_FOR);
            convey::lan::locate(args.code.nameplate(), window).await?
        }
    };
    let yes = args.yes;
    let said = out.clone();
    let accept = Arc::new(move |offer: &OfferSummary| {
        if yes {
            said.say(&format!("Receiving {}", describe(offer)));
            true
        } else {
            prompt(offer)
        }
    });
    let (shown, mode) = (out.clone(), out.mode);
    let events = out.sink(move |ev| match ev {
        Event::Waiting if mode != Mode::Json => {
            shown.say("Waiting for the sender…");
            true
        }
        _ => false,
    });
    let opts = ReceiveOptions {
        relay,
        code: args.code,
        out_dir: args
            .out
            .or_else(|| config.out.clone())
            .unwrap_or_else(|| ".".into()),
        overwrite: args.overwrite,
        wait: args.wait.or(config.receive_wait()).unwrap_or(RECEIVE_WAIT),
        accept,
        transport: args.transport,
        guard_terminal: std::io::stdout().is_terminal() && !args.to_terminal,
        silence: convey::PEER_SILENCE,
        seed_for: args.seed_for.unwrap_or(convey::SEED_FOR),
    };
    let report = convey::receive(opts, events).await?;
    let secs = report.elapsed.as_secs_f64();
    match report.received {
        Received::Text(text) => {
            if out.mode == Mode::Json {
                out.json(&serde_json::json!({"event": "text", "text": text}));
            } else {
                let shown = if std::io::stdout().is_terminal() {
                    format!("{}\n", convey::display_safe(&text, true))
                } else {
                    text
                };
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(shown.as_bytes())
                    .and_then(|()| stdout.flush())
                    .map_err(|source| convey::Error::Io {
                        context: "writing the received text to standard output".into(),
                        source,
                    })?;
            }
        }
        Received::Stream => out.say(&format!("Received {} in {secs:.1}s", human_bytes(report.bytes))),
        Received::Files { paths, count } => {
            let mut names: Vec<String> = paths
                .iter()
                .take(SHOWN_NAMES)
                .map(|p| convey::display_safe(&p.display().to_string(), false))
                .collect();
            if paths.len() > SHOWN_NAMES {
                names.push(format!("and {} more", paths.len() - SHOWN_NAMES));
            }
            out.say(&format!(
                "Received {count} file{} ({}) in {secs:.1}s ({:.0} MB/s): {}",
                if count == 1 { "" } else { "s" },
                human_bytes(report.bytes),
                report.bytes as f64 / secs.max(1e-6) / 1e6,
                names.join(", ")
            ));
        }
    }
    Ok(())
}

/// "3 files (1.2 MiB): photos/, notes.txt"
fn describe(offer: &OfferSummary) -> String {
    let size = offer.bytes.map_or_else(|| "size unknown".to_owned(), human_bytes);
    let mut names = offer.names.join(", ");
    if offer.more > 0 {
        names.push_str(&format!(" and {} more", offer.more));
    }
    match offer.kind {
        "stream" => format!("a stream ({size}) to standard output"),
        _ => format!(
            "{} file{} ({size}): {names}",
            offer.files,
            if offer.files == 1 { "" } else { "s" }
        ),
    }
}

/// Ask on the terminal. Without one, refuse and say how to accept non-interactively.
fn prompt(offer: &OfferSummary) -> bool {
    let what = describe(offer);
    if !std::io::stdin().is_terminal() {
        eprintln!("Offered {what}; not accepting without a terminal to ask on. Use --yes to accept.");
        return false;
    }
    eprint!("Receive {what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

fn parse_rate(s: &str) -> Result<std::num::NonZeroU32, String> {
    let t = s.trim();
    let (digits, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 500K, 20M or 1G"))?;
    n.checked_mul(mult)
        .and_then(|v| u32::try_from(v).ok())
        .and_then(std::num::NonZeroU32::new)
        .ok_or_else(|| format!("{s:?} must be between 1 byte/s and 4G"))
}
