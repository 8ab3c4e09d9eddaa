//! The TOML config file (`--config FILE`): its serde model, loading, and the
//! checks of its values, each naming the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::cli::{EnvName, LogFormat, RateArg};
use crate::input::{ColumnSpec, FIELDS, Field};

/// Why the config file, or one of its values, cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or has a key or type the model does not know.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key's value is out of range or malformed.
    #[error("config file {path}: {key}: {message}")]
    Value {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The TOML config file: any option of `run`/`check`, plus a `[columns]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub(crate) sandbox: Option<bool>,
    pub(crate) env: Option<EnvName>,
    pub(crate) base_url: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret_file: Option<PathBuf>,
    pub(crate) scope: Option<String>,
    pub(crate) encoding: Option<String>,
    delimiter: Option<String>,
    pub(crate) phone_region: Option<String>,
    pub(crate) default_locale: Option<String>,
    pub(crate) require_address: Option<bool>,
    rate: Option<RateValue>,
    pub(crate) rate_max: Option<u32>,
    pub(crate) rate_start: Option<u32>,
    max_error_rate: Option<f64>,
    pub(crate) error_window: Option<u32>,
    pub(crate) burst: Option<u32>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) timeout: Option<String>,
    pub(crate) time_budget: Option<String>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) state: Option<PathBuf>,
    pub(crate) metrics_file: Option<PathBuf>,
    shard: Option<String>,
    pub(crate) log_format: Option<LogFormat>,
    pub(crate) no_progress: Option<bool>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
    /// Where relative paths in the file are resolved from.
    #[serde(skip)]
    base_dir: PathBuf,
    #[serde(skip)]
    path: PathBuf,
}

/// `rate = 10` or `rate = "auto"`: the serde shape only; [`ConfigFile::rate`]
/// reads it as the `--rate` flag is read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum RateValue {
    Number(u32),
    Word(String),
}

impl ConfigFile {
    /// Read and parse `path`.
    pub(crate) fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        Ok(Self::parse(&text, path)?)
    }

    /// Parse `text`, the contents of the file at `path`.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let mut cfg: ConfigFile = toml::from_str(text).map_err(|e| ConfigFileError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string()
                + &e.span()
                    .map(|s| format!(" (at line {})", text[..s.start].matches('\n').count() + 1))
                    .unwrap_or_default(),
        })?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.path = path.to_path_buf();
        Ok(cfg)
    }

    /// A path the file gives, relative to the file's directory.
    fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A path the file gives, if any, resolved against the file's directory.
    pub(crate) fn path_of(&self, v: &Option<PathBuf>) -> Option<PathBuf> {
        v.as_deref().map(|p| self.resolve_path(p))
    }

    fn value_error(&self, key: &'static str, message: String) -> ConfigFileError {
        ConfigFileError::Value {
            path: self.path.clone(),
            key,
            message,
        }
    }

    /// A duration such as `30s`, read as the flags read one.
    /// `shard = "K/N"`.
    pub(crate) fn shard(&self) -> Result<Option<crate::shard::Shard>, ConfigFileError> {
        self.shard
            .as_deref()
            .map(|s| s.parse().map_err(|m| self.value_error("shard", m)))
            .transpose()
    }

    pub(crate) fn duration(
        &self,
        key: &'static str,
        v: &Option<String>,
    ) -> Result<Option<Duration>, ConfigFileError> {
        v.as_deref()
            .map(|s| crate::cli::parse_duration(s).map_err(|m| self.value_error(key, m)))
            .transpose()
    }

    /// A count of at least 1.
    pub(crate) fn nonzero(
        &self,
        key: &'static str,
        v: Option<u32>,
    ) -> Result<Option<u32>, ConfigFileError> {
        match v {
            Some(0) => Err(self.value_error(key, "must be at least 1".into())),
            other => Ok(other),
        }
    }

    /// `rate`: a word goes through the `--rate` flag's parser; a number
    /// must be at least 1.
    pub(crate) fn rate(&self) -> Result<Option<RateArg>, ConfigFileError> {
        match &self.rate {
            None => Ok(None),
            Some(RateValue::Number(0)) => {
                Err(self.value_error("rate", "must be at least 1".into()))
            }
            Some(RateValue::Number(n)) => Ok(Some(RateArg::Fixed(*n))),
            Some(RateValue::Word(w)) => crate::cli::parse_rate(w)
                .map(Some)
                .map_err(|m| self.value_error("rate", m)),
        }
    }

    /// `max_error_rate`: a fraction between 0 and 1.
    pub(crate) fn max_error_rate(&self) -> Result<Option<f64>, ConfigFileError> {
        match self.max_error_rate {
            Some(p) if !(0.0..=1.0).contains(&p) => Err(self.value_error(
                "max_error_rate",
                format!("expected a number between 0 and 1, got {p}"),
            )),
            other => Ok(other),
        }
    }

    /// `delimiter`, read as the `--delimiter` flag is read.
    pub(crate) fn delimiter(&self) -> Result<Option<u8>, ConfigFileError> {
        self.delimiter
            .as_deref()
            .map(|s| crate::cli::parse_delimiter(s).map_err(|m| self.value_error("delimiter", m)))
            .transpose()
    }

    /// Apply the `[columns]` table to `columns`; field names are matched
    /// case-insensitively.
    pub(crate) fn map_columns(&self, columns: &mut ColumnSpec) -> Result<(), ConfigFileError> {
        for (field, header) in &self.columns {
            let f = Field::from_name(&field.to_ascii_lowercase()).ok_or_else(|| {
                self.value_error(
                    "columns",
                    format!("unknown field '{field}' (fields: {})", FIELDS.join(", ")),
                )
            })?;
            columns.map(f, header.clone());
        }
        Ok(())
    }
}
