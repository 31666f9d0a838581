//! ExpressGateway configuration: the TOML schema, every default (defined
//! once in [`defaults`]), and validation that reports every error with its
//! key path. [`load`] and [`parse`] return a fully validated [`Config`].
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(missing_docs)]

pub mod defaults;
mod diff;
mod error;
mod model;
pub mod schema;
mod validate;

pub use diff::{diff, ConfigDiff};
pub use error::{ConfigError, LoadError};
pub use model::*;

/// Read, parse and validate the file at `path`. Relative file paths in
/// it are anchored at the file's directory.
pub fn load(path: &str) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut config = parse(&text)?;
    let base = std::path::Path::new(path)
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    config.anchor_paths(base);
    config.anchor_access_logs(base);
    Ok(config)
}

/// Parse and validate TOML text. Relative file paths stay relative to the
/// working directory.
pub fn parse(text: &str) -> Result<Config, LoadError> {
    let raw = parse_raw(text)?;
    validate::validate(raw).map_err(LoadError::Invalid)
}

fn parse_raw(text: &str) -> Result<schema::RawConfig, LoadError> {
    // One line per error: toml's own rendering spans several lines with a
    // source excerpt, which would break the one-error-per-line report.
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let location = e
            .span()
            .map(|span| format!(" at {}", position_of(text, span.start)))
            .unwrap_or_default();
        LoadError::Parse(ConfigError {
            path: String::new(),
            reason: format!("TOML syntax error{location}: {}", e.message().trim_end()),
        })
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let reason = inner.message().trim_end().to_owned();
        let location = inner
            .span()
            .map(|span| format!(" (line {})", line_of(text, span.start)))
            .unwrap_or_default();
        LoadError::Parse(ConfigError {
            path: if path == "." { String::new() } else { path },
            reason: format!("{reason}{location}"),
        })
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|before| before.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// `line L, column C` (both from 1, column in characters).
fn position_of(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or_default();
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
        + 1;
    format!("line {}, column {column}", line_of(text, offset))
}
