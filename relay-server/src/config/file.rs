//! The optional relay config file: a flat TOML table whose keys are the long flag names
//! (`-` or `_`). Settings the command line and environment leave at their defaults are
//! taken from it, so all three sources fill the one [`Config`](super::Config) struct and
//! the file cannot name a setting the flags lack.

use std::{ffi::OsString, path::Path};

use clap::{ArgAction, CommandFactory, FromArgMatches, parser::ValueSource};

/// The config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid TOML: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("the config file {path} sets {key:?}, which is not a relay setting (see convey-relay --help)")]
    UnknownKey { path: String, key: String },
    #[error("the config file {path} sets {key:?} to a {value}; give a string, a number or a boolean")]
    BadValue {
        path: String,
        key: String,
        value: String,
    },
    #[error("{0}")]
    Args(#[from] clap::Error),
}

/// Parse `args` into `C`, then fill what they leave at a default from the file named by
/// the `config` argument, if any.
pub fn parse<C: CommandFactory + FromArgMatches>(args: Vec<OsString>) -> Result<C, FileError> {
    let matches = C::command().try_get_matches_from(&args)?;
    let Some(path) = matches.get_one::<std::path::PathBuf>("config") else {
        return Ok(C::from_arg_matches(&matches)?);
    };
    let extra = file_args(&matches, path)?;
    if extra.is_empty() {
        return Ok(C::from_arg_matches(&matches)?);
    }
    let mut all = args;
    all.extend(extra);
    let matches = C::command().try_get_matches_from(all)?;
    Ok(C::from_arg_matches(&matches)?)
}

/// The file's settings as `--flag=value` arguments, for the settings still at a default.
fn file_args(matches: &clap::ArgMatches, path: &Path) -> Result<Vec<OsString>, FileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: shown.clone(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|source| FileError::Parse {
        path: shown.clone(),
        source,
    })?;
    // Only the relay's settings, not the binary's other flags (such as --health-check).
    let settings = <super::Config as clap::Args>::augment_args(clap::Command::new("convey-relay"));
    let mut out = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = settings
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && id != "config" && a.get_long().is_some())
            .ok_or_else(|| FileError::UnknownKey {
                path: shown.clone(),
                key: key.clone(),
            })?;
        if !matches!(matches.value_source(&id), None | Some(ValueSource::DefaultValue)) {
            continue;
        }
        let long = arg.get_long().unwrap_or_default();
        let text = match (&value, arg.get_action()) {
            (toml::Value::Boolean(true), ArgAction::SetTrue) => {
                out.push(format!("--{long}").into());
                continue;
            }
            (toml::Value::Boolean(false), ArgAction::SetTrue) => continue,
            (toml::Value::String(s), _) => s.clone(),
            (toml::Value::Integer(n), _) => n.to_string(),
            _ => {
                return Err(FileError::BadValue {
                    path: shown,
                    key,
                    value: value.type_str().to_owned(),
                });
            }
        };
        out.push(format!("--{long}={text}").into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::Config;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn args(file: &Path, extra: &[&str]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "convey-relay".into(),
            format!("--config={}", file.display()).into(),
        ];
        v.extend(extra.iter().map(OsString::from));
        v
    }

    #[test]
    fn file_fills_defaults_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("relay.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9\"\nidle-secs = 7\nopen_tracker = true\nstun-listen = \"off\"\nnameplate-ttl-secs = 5\n",
        )
        .unwrap();
        let c = parse::<Cli>(args(&f, &["--nameplate-ttl-secs=99"]))
            .unwrap()
            .config;
        assert_eq!(c.listen.to_string(), "127.0.0.1:9");
        assert_eq!((c.idle_secs, c.nameplate_ttl_secs, c.open_tracker), (7, 99, true));
        assert_eq!(c.stun_listen.0, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("relay.toml");
        std::fs::write(&f, "idle-seconds = 7\n").unwrap();
        let e = parse::<Cli>(args(&f, &[])).unwrap_err().to_string();
        assert!(
            e.contains("\"idle-seconds\", which is not a relay setting"),
            "{e}"
        );
        std::fs::write(&f, "idle-secs = [1]\n").unwrap();
        assert!(matches!(
            parse::<Cli>(args(&f, &[])),
            Err(FileError::BadValue { .. })
        ));
        std::fs::write(&f, "idle-secs = \"soon\"\n").unwrap();
        assert!(matches!(parse::<Cli>(args(&f, &[])), Err(FileError::Args(_))));
        let e = parse::<Cli>(args(&dir.path().join("missing.toml"), &[])).unwrap_err();
        assert!(matches!(e, FileError::Read { .. }));
    }
}
