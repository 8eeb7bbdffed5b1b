//! Everything that can end a transfer, each with its own exit code so scripts can react.

use convey_shared::protocol::rendezvous::ErrorKind;

use crate::Transport;

/// Why a transfer did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "key confirmation failed: the code was wrong, or someone tried to guess it. Nothing was sent; start again with a new code"
    )]
    WrongCode,
    #[error("{0}")]
    Timeout(String),
    /// A code for several receivers closed after too many failed tries.
    #[error("{0}")]
    CodeClosed(String),
    #[error("the receiver declined the transfer{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Declined(Option<String>),
    #[error("transfer failed: {0}")]
    Transfer(String),
    #[error(
        "the other side vanished before the transfer finished; run both commands again to resume where it stopped"
    )]
    PeerGone,
    /// No allowed path between the peers carried a connection: which, and how each failed.
    #[error("{}", no_path(.transport, .why))]
    NoPath { transport: Transport, why: String },
    #[error("cannot reach the relay at {relay}: {reason}. Check --relay / CONVEY_RELAY{hint}")]
    RelayUnreachable {
        relay: String,
        reason: String,
        /// What else the side that prints it may check (the receiver: that the sender,
        /// whose relay it may be, still runs).
        hint: &'static str,
    },
    #[error(
        "lost the relay at {relay} and could not reach the other side through it again within {secs} s ({reason}); what arrived is kept: run both commands again (with a new code) to resume"
    )]
    RelayLost {
        relay: String,
        secs: u64,
        reason: String,
    },
    /// No relay configured, and no sender found on the LAN or this machine (or two).
    #[error("{0}")]
    NotFound(String),
    #[error("the relay refused: {message}")]
    Relay { kind: ErrorKind, message: String },
    #[error("the relay refused the tunnel: {0}")]
    RelayRefused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
    /// The disk under the receiver's output folder filled up during the transfer.
    #[error(
        "the disk holding {dir} is full (about {needed_mib} MiB more needed); the partial transfer is kept: free space and run both commands again (with a new code) to resume"
    )]
    DiskFull { dir: String, needed_mib: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// The documented process exit code for this error (see the README).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::WrongCode | Self::CodeClosed(_) => 3,
            Self::Timeout(_) => 4,
            Self::Declined(_) => 5,
            Self::Transfer(_) | Self::PeerGone | Self::NoPath { .. } => 6,
            Self::RelayUnreachable { .. }
            | Self::RelayLost { .. }
            | Self::Relay { .. }
            | Self::RelayRefused(_)
            | Self::NotFound(_)
            | Self::Protocol(_) => 7,
            Self::Io { .. } | Self::Refused(_) | Self::DiskFull { .. } => 8,
        }
    }

    /// This error as it ends a stream (`send -`): a stream cannot resume, since the
    /// sender's standard input is gone, so a vanished peer means sending it anew.
    pub(crate) fn for_stream(self) -> Self {
        match self {
            Self::PeerGone => Self::Transfer(
                "the other side vanished before the stream finished; the output is incomplete and a stream does not resume: run both commands again to send it anew".into(),
            ),
            other => other,
        }
    }

    /// What the other side is told when this ends the transfer here: a category only,
    /// never this machine's paths or its libraries' messages.
    pub(crate) fn for_peer(&self) -> String {
        match self {
            Self::DiskFull { .. } => "the receiver ran out of disk space",
            Self::Io { .. } => "the receiver could not write or read its files",
            Self::Transfer(_) => "the transfer failed on the receiver's side (it says why there)",
            Self::Refused(_) | Self::Declined(_) => "the receiver refused the offer",
            Self::Protocol(_) => "the receiver found a message from the sender invalid",
            Self::Timeout(_) => "the receiver timed out",
            Self::PeerGone => "the receiver lost its connection to the sender",
            // Which paths failed and at which step: nothing of the receiver's machine.
            Self::NoPath { transport, why } => {
                return format!("the receiver could not connect: {}", no_path(transport, why));
            }
            _ => "the receiver failed",
        }
        .to_owned()
    }
}

fn no_path(transport: &Transport, why: &str) -> String {
    if *transport == Transport::Auto {
        format!(
            "no path reached the other side ({why}); check that the two machines can reach each other or the relay"
        )
    } else {
        format!(
            "--transport {} could not connect the two sides ({why}); allow that path between the machines, or use --transport auto",
            transport.name()
        )
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
