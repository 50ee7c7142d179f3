//! Finding, loading and initialising the ONNX Runtime shared library.
//!
//! sluice links ONNX Runtime dynamically (`ort`'s `load-dynamic`); nothing is downloaded at build time. The library
//! is looked for, in order: the configured path (`runtime.library` / `--onnxruntime`), `ORT_DYLIB_PATH`, the
//! project-local `.ort/` folder that `scripts/fetch-onnxruntime.sh` fills, then next to the executable. An explicitly
//! configured path that does not exist is an error rather than a silent fall-through. Knows nothing about models.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::logging::LogLevel;
use tracing::Level;

/// The library file name the fetch script installs.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.32.0";
/// The minimum ONNX Runtime minor version (`ort`'s `api-31`).
pub const MIN_MINOR_VERSION: u32 = ort::MINOR_VERSION;
const FETCH_HINT: &str = "run `scripts/fetch-onnxruntime.sh` (it fetches onnxruntime 1.32.0 from PyPI into .ort/), or point ORT_DYLIB_PATH or --onnxruntime at libonnxruntime.so";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found (looked in: {looked}); {FETCH_HINT}")]
    NotFound { looked: String },
    #[error("ONNX Runtime library {path} (from {source_name}) does not exist; {FETCH_HINT}")]
    Missing {
        path: PathBuf,
        source_name: &'static str,
    },
    #[error("ONNX Runtime library {path} is too old or unusable: {reason}; sluice needs ONNX Runtime >= 1.{MIN_MINOR_VERSION}; {FETCH_HINT}")]
    Unusable { path: PathBuf, reason: String },
    #[error("ONNX Runtime failed to initialise: {0}")]
    Init(String),
}

/// Where to look for the library, in priority order, each with a name for messages.
pub fn candidates(
    configured: Option<&Path>,
    env_path: Option<PathBuf>,
) -> Vec<(&'static str, PathBuf, bool)> {
    let mut list = Vec::new();
    if let Some(path) = configured {
        list.push((
            "configuration (runtime.library / --onnxruntime)",
            path.to_path_buf(),
            true,
        ));
    }
    if let Some(path) = env_path {
        list.push(("ORT_DYLIB_PATH", path, true));
    }
    list.push((
        "the working directory's .ort/",
        PathBuf::from(".ort").join(LIBRARY_FILE),
        false,
    ));
    list.push((
        "the project's .ort/",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".ort")
            .join(LIBRARY_FILE),
        false,
    ));
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        list.push(("next to the executable", dir.join(LIBRARY_FILE), false));
        list.push((
            "next to the executable",
            dir.join("libonnxruntime.so"),
            false,
        ));
    }
    list
}

/// Picks the first existing candidate; an explicit (configured or env) path must exist.
pub fn locate(
    configured: Option<&Path>,
    env_path: Option<PathBuf>,
) -> Result<PathBuf, RuntimeError> {
    let list = candidates(configured, env_path);
    for (source_name, path, explicit) in &list {
        if path.is_file() {
            return Ok(std::path::absolute(path).unwrap_or_else(|_| path.clone()));
        }
        if *explicit {
            return Err(RuntimeError::Missing {
                path: path.clone(),
                source_name,
            });
        }
    }
    let looked = list
        .iter()
        .map(|(_, p, _)| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(RuntimeError::NotFound { looked })
}

/// Loads the library at `path` and creates the process's ONNX Runtime environment (one per process).
pub fn init(path: &Path) -> Result<ort::environment::Environment, RuntimeError> {
    let builder = ort::init_from(path).map_err(|e| RuntimeError::Unusable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    builder
        .with_name("sluice")
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|e| RuntimeError::Init(e.to_string()))
}

/// ONNX Runtime's own messages (a node that failed, a model's warnings), written through `tracing` like every
/// other line, so they follow `log.format` and `log.level` instead of going to stderr in ONNX Runtime's format.
/// Its INFO messages are chatty and go to DEBUG. Sessions only pass on warnings and worse
/// (`model::build_session`), so a run never calls this for anything quieter.
fn forward_log(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    macro_rules! forward {
        ($level:expr) => {
            tracing::event!(target: "onnxruntime", $level, category, id, location, "{message}")
        };
    }
    match level {
        LogLevel::Verbose => forward!(Level::TRACE),
        LogLevel::Info => forward!(Level::DEBUG),
        LogLevel::Warning => forward!(Level::WARN),
        LogLevel::Error | LogLevel::Fatal => forward!(Level::ERROR),
    }
}

/// `locate` then `init`, reading `ORT_DYLIB_PATH` from the environment.
pub fn load(
    configured: Option<&Path>,
) -> Result<(PathBuf, ort::environment::Environment), RuntimeError> {
    let env_path = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let path = locate(configured, env_path)?;
    let env = init(&path)?;
    Ok((path, env))
}

/// The ONNX Runtime environment for unit tests: ONNX Runtime allows one per process, so tests share it.
#[cfg(test)]
pub(crate) fn test_environment() -> ort::environment::Environment {
    static ENV: std::sync::OnceLock<ort::environment::Environment> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        load(None)
            .expect("ONNX Runtime (run scripts/fetch-onnxruntime.sh)")
            .1
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_path_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so");
        std::fs::write(&lib, b"not really").unwrap();
        let other = dir.path().join("other.so");
        std::fs::write(&other, b"x").unwrap();
        assert_eq!(locate(Some(&lib), Some(other.clone())).unwrap(), lib);
        assert_eq!(locate(None, Some(other.clone())).unwrap(), other);
        let missing = dir.path().join("missing.so");
        let err = locate(Some(&missing), Some(other)).unwrap_err();
        assert!(matches!(err, RuntimeError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("scripts/fetch-onnxruntime.sh"));
    }
}
