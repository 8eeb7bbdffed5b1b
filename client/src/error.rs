//! Everything that can end a transfer, each with its own exit code so scripts can react.

use convey_shared::protocol::rendezvous::ErrorKind;

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
    #[error(
        "cannot reach the relay at {relay}: {reason}. Check --relay / CONVEY_RELAY, or that `convey send` is still running"
    )]
    RelayUnreachable { relay: String, reason: String },
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
            Self::Transfer(_) | Self::PeerGone => 6,
            Self::RelayUnreachable { .. }
            | Self::Relay { .. }
            | Self::RelayRefused(_)
            | Self::NotFound(_)
            | Self::Protocol(_) => 7,
            Self::Io { .. } | Self::Refused(_) => 8,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
