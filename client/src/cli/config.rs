//! The optional config file (`~/.config/convey/config.toml`, or `--config` /
//! `CONVEY_CONFIG`): defaults for the relay, the output folder, waits and the upload cap.
//! Flags and environment variables override it.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use convey::RelayAddr;
use serde::Deserialize;

/// Everything the config file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Relay address, as `--relay`.
    pub(crate) relay: Option<String>,
    /// A private relay's access token, as `--relay-token`.
    pub(crate) relay_token: Option<String>,
    /// A CA certificate (PEM) for an https:// relay, as `--relay-ca`.
    pub(crate) relay_ca: Option<PathBuf>,
    /// Default `--out` for `convey receive`.
    pub(crate) out: Option<PathBuf>,
    /// Default `--wait` for `convey receive` (e.g. "30s").
    pub(crate) receive_wait: Option<String>,
    /// Default `--wait` for `convey send` (e.g. "10m").
    pub(crate) send_wait: Option<String>,
    /// Default `--limit-rate` for `convey send` (e.g. "20M").
    pub(crate) limit_rate: Option<String>,
}

/// The default config path: `$XDG_CONFIG_HOME/convey/config.toml` or `~/.config/...`.
pub(crate) fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "convey").map(|d| d.config_dir().join("config.toml"))
}

impl Config {
    /// Load `explicit` (which must exist) or the default file (if it exists).
    pub(crate) fn load(explicit: Option<PathBuf>) -> anyhow::Result<Self> {
        let (path, required) = match explicit {
            Some(p) => (p, true),
            None => match default_path() {
                Some(p) => (p, false),
                None => return Ok(Self::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading the config file {}", path.display())),
        };
        let config: Self =
            toml::from_str(&text).with_context(|| format!("in the config file {}", path.display()))?;
        config
            .check()
            .with_context(|| format!("in the config file {}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        self.relay()?;
        self.wait(&self.receive_wait)?;
        self.wait(&self.send_wait)?;
        self.limit_rate()?;
        Ok(())
    }

    pub(crate) fn relay(&self) -> anyhow::Result<Option<RelayAddr>> {
        self.relay
            .as_deref()
            .map(|r| r.parse().with_context(|| format!("relay = {r:?}")))
            .transpose()
    }

    fn wait(&self, v: &Option<String>) -> anyhow::Result<Option<Duration>> {
        v.as_deref()
            .map(|w| humantime::parse_duration(w).with_context(|| format!("wait = {w:?}")))
            .transpose()
    }

    pub(crate) fn receive_wait(&self) -> Option<Duration> {
        self.wait(&self.receive_wait).ok().flatten()
    }

    pub(crate) fn send_wait(&self) -> Option<Duration> {
        self.wait(&self.send_wait).ok().flatten()
    }

    pub(crate) fn limit_rate(&self) -> anyhow::Result<Option<std::num::NonZeroU32>> {
        self.limit_rate
            .as_deref()
            .map(|r| super::parse_rate(r).map_err(anyhow::Error::msg))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_values() {
        let c: Config = toml::from_str("relay = \"relay.example:4790\"\nreceive_wait = \"2m\"\n").unwrap();
        assert!(c.check().is_ok());
        assert_eq!(c.receive_wait(), Some(Duration::from_secs(120)));
        let bad: Config = toml::from_str("send_wait = \"soon\"").unwrap();
        assert!(bad.check().is_err());
        assert!(
            toml::from_str::<Config>("colour = true").is_err(),
            "unknown keys are errors"
        );
    }
}
