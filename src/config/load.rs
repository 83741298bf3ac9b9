//! TODO
use super::Config;
use std::path::Path;
#[derive(Debug, thiserror::Error)]
#[error("todo")]
pub struct ConfigError;
pub fn load(_path: &Path) -> Result<Config, ConfigError> { Err(ConfigError) }
pub fn parse(_text: &str, _path: &Path) -> Result<Config, ConfigError> { Err(ConfigError) }
