//! Configuration errors: each names the key path and the reason.

use std::fmt;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `listeners[1].backends[0].address`.
    pub path: String,
    /// Why the value is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {}", read_reason(source))]
    Read {
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{0}")]
    Parse(ConfigError),
    /// The file parsed but failed validation; every error is listed.
    #[error("{}", display_all(.0))]
    Invalid(Vec<ConfigError>),
}

impl LoadError {
    /// The individual errors (one for read and parse failures).
    pub fn errors(&self) -> Vec<String> {
        match self {
            Self::Invalid(all) => all.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// The usual reasons in plain words; the OS text for anything else.
fn read_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

fn display_all(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}
