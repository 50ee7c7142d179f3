//! One loaded model version: its [`Signature`] read from the ONNX file and a [`SessionPool`] to run it.
//!
//! Owns session creation (per-model settings from `model.toml`) and `infer(&[Tensor]) -> Vec<Tensor>`. Knows
//! nothing about routing, the registry or HTTP.

pub mod batch;
pub mod card;
mod convert;
pub mod declared;
pub mod pool;
pub mod signature;
pub mod stats;
pub mod warmup;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session, SessionOutputs};
use serde::Deserialize;

pub use self::batch::BatchSettings;
use self::batch::{Batcher, RunBatch};
pub use self::card::ModelCard;
pub use self::pool::{RunTiming, SessionPool};
pub use self::signature::{IoKind, IoSpec, Signature};
pub use self::stats::Statistics;
pub use self::warmup::WarmupSettings;
use crate::memory::{Footprint, Reservation};
use crate::metrics::VersionSeries;
use crate::monitoring::drift::DriftMonitor;
use crate::tensor::Tensor;

/// Why an inference failed after validation passed. All are server-side (500).
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("input '{input}' could not be handed to ONNX Runtime: {message}")]
    Input { input: String, message: String },
    #[error("ONNX Runtime failed: {0}")]
    Runtime(String),
    #[error("output '{output}' {message}")]
    Output { output: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("model version overloaded: {waiting} requests are already waiting for a session; retry later")]
    Overloaded { waiting: usize },
}

/// Session settings for one model (`model.toml`); unset fields take the server's defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Sessions per version: how many requests to this version run at once.
    pub pool_size: Option<usize>,
    pub intra_op_threads: Option<usize>,
    pub inter_op_threads: Option<usize>,
    pub optimization_level: Option<OptimizationLevel>,
    /// Runs predicted to take at most this long (µs) happen on the async worker that holds the request instead of
    /// the blocking pool (see `pool::RunCost`); 0 sends every run to the blocking pool.
    pub inline_run_max_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    Disable,
    Basic,
    Extended,
    All,
}

impl SessionSettings {
    /// Pool size when unset: one session per core (at most 4), each running single-threaded, which gives small
    /// models the most throughput. Compute-heavy models should set `intra_op_threads` and a smaller pool.
    pub fn effective_pool_size(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.pool_size.unwrap_or(cores.min(4)).max(1)
    }

    /// The longest predicted run done on the async worker when unset: 50 µs, within what Tokio advises between two
    /// `.await`s, and far below a compute-heavy model's runs, which therefore always go to the blocking pool.
    pub fn effective_inline_run_max(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.inline_run_max_us.unwrap_or(50))
    }
}

/// Everything of one model's `model.toml` that a version's load depends on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionSettings {
    pub session: SessionSettings,
    /// Dynamic batching, when configured.
    pub batching: Option<BatchSettings>,
    pub warmup: WarmupSettings,
}

/// Server-wide options of a load.
#[derive(Clone)]
pub struct LoadOptions {
    /// Requests that may wait for a session before the rest are refused (overload).
    pub max_waiting: usize,
    /// Rows in the drift window.
    pub drift_window: usize,
    /// Where batch sizes are recorded.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_waiting: 128,
            drift_window: 1000,
            metrics: None,
        }
    }
}

/// A loaded, runnable model version.
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    pub signature: Signature,
    /// `card.toml` next to the model, when present (its checksum was verified at load).
    pub card: Option<ModelCard>,
    /// Drift of live inputs against `reference.json`, when the version has one.
    pub drift: Option<DriftMonitor>,
    /// The dynamic-batching queue, when `[batching]` is configured.
    batcher: Option<Batcher>,
    /// Shared with the batcher's runs.
    pool: Arc<SessionPool>,
    /// This version's request metrics, looked up on its first request (`inference`).
    pub series: OnceLock<VersionSeries>,
    /// Its inference statistics (Triton's statistics extension), shared with its batcher.
    pub stats: Arc<Statistics>,
    /// What its requests hold, learned from those it served; the next one reserves that much.
    pub footprint: Footprint,
    /// The memory its sessions were estimated to take, held from the budget while it is loaded (when loads count).
    resident: Reservation,
    /// That estimate in bytes ([`ModelVersion::estimate_load`]): what `models.max_loaded_bytes` counts.
    pub resident_bytes: usize,
}

impl std::fmt::Debug for ModelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelVersion")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("pool_size", &self.pool.size())
            .finish()
    }
}

impl ModelVersion {
    /// Loads `path` into a pool of sessions and warms each session up (blocking: call from a blocking thread).
    pub fn load(
        env: &Environment,
        name: &str,
        version: u64,
        path: &Path,
        settings: &VersionSettings,
        options: &LoadOptions,
    ) -> Result<ModelVersion, String> {
        let batching = settings.batching.as_ref();
        let session = &settings.session;
        // The card first: a checksum mismatch refuses the load before ONNX Runtime reads the file.
        let card = card::load(path)?;
        let drift = DriftMonitor::load(path, options.drift_window)?;
        let size = session.effective_pool_size();
        let mut sessions = (0..size)
            .map(|_| build_session(env, path, session).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let first = &sessions[0];
        let signature = Signature {
            inputs: first
                .inputs()
                .iter()
                .map(|o| IoSpec::from_onnx(o.name(), o.dtype()))
                .collect(),
            outputs: first
                .outputs()
                .iter()
                .map(|o| IoSpec::from_onnx(o.name(), o.dtype()))
                .collect(),
        };
        if batching.is_some() {
            batch::check_batchable(&signature)?;
        }
        if let Some(inputs) = warmup::inputs(&settings.warmup, &signature, path)? {
            warmup::run(&mut sessions, &inputs, &settings.warmup)?;
        }
        let pool = Arc::new(SessionPool::new(
            sessions,
            options.max_waiting,
            session.effective_inline_run_max(),
        ));
        let stats = Arc::new(Statistics::default());
        let batcher = batching
            .filter(|_| tokio::runtime::Handle::try_current().is_ok())
            .map(|b| {
                let runner = Arc::clone(&pool);
                let run: RunBatch = Arc::new(move |inputs, outputs| {
                    let pool = Arc::clone(&runner);
                    Box::pin(async move {
                        pool.with_session(elements(&inputs), move |session| {
                            run(session, inputs, outputs)
                        })
                        .await
                        .map(|(out, _)| out)
                    })
                });
                Batcher::start(
                    b.clone(),
                    run,
                    options.metrics.clone(),
                    Arc::clone(&stats),
                    (name.to_owned(), version.to_string()),
                )
            });
        Ok(ModelVersion {
            name: name.to_owned(),
            version,
            signature,
            card,
            drift,
            batcher,
            pool,
            series: OnceLock::new(),
            stats,
            footprint: Footprint::default(),
            resident: Reservation::none(),
            resident_bytes: Self::estimate_load(path, settings),
        })
    }

    /// Sessions in its pool: requests it runs at once.
    pub fn pool_size(&self) -> usize {
        self.pool.size()
    }

    /// Holds `memory` (reserved for this version's sessions before the load) for as long as the version lives.
    pub fn hold(mut self, memory: Reservation) -> ModelVersion {
        self.resident = memory;
        self
    }

    /// The memory a load of the file at `path` with `settings` is estimated to take: each session holds the weights
    /// (twice, while ONNX Runtime optimises and pre-packs them) and some working space.
    pub fn estimate_load(path: &Path, settings: &VersionSettings) -> usize {
        let file = std::fs::metadata(path).map_or(0, |m| m.len() as usize);
        let sessions = settings.session.effective_pool_size();
        sessions.saturating_mul(file.saturating_mul(2).saturating_add(4 << 20))
    }

    /// Runs validated `inputs`, returning the `outputs` named (in that order).
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
    ) -> Result<Vec<Tensor>, InferError> {
        let mut memory = Reservation::none();
        self.infer_timed(inputs, outputs, &mut memory, None)
            .await
            .map(|(out, _)| out)
    }

    /// As [`ModelVersion::infer`], also returning how long the request waited (for a session, or in the batch
    /// queue) and when its run ended. The request's `memory` goes with the run to its thread and comes back with
    /// the outputs: a caller that stops waiting (a timeout) releases it only when the run ends and frees its memory.
    pub async fn infer_timed(
        &self,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
        memory: &mut Reservation,
        link: Option<opentelemetry::trace::SpanContext>,
    ) -> Result<(Vec<Tensor>, RunTiming), InferError> {
        match &self.batcher {
            Some(batcher) => {
                let (outputs, queued, batch) = batcher.submit(inputs, outputs, link).await?;
                let finished = std::time::Instant::now();
                Ok((
                    outputs,
                    RunTiming {
                        queued,
                        finished,
                        batch,
                    },
                ))
            }
            None => {
                let held = memory.split(usize::MAX);
                let ((outputs, held), timing) = self
                    .pool
                    .with_session(elements(&inputs), move |session| {
                        run(session, inputs, outputs).map(|outputs| (outputs, held))
                    })
                    .await?;
                memory.merge(held);
                self.stats.execution();
                Ok((outputs, timing))
            }
        }
    }
}

fn build_session(env: &Environment, path: &Path, s: &SessionSettings) -> ort::Result<Session> {
    // Without ONNX Runtime's arena: a large request's working memory is freed when the run ends instead of staying
    // in the session's arena for good.
    let cpu = ort::ep::CPU::default().with_arena_allocator(false).build();
    let mut builder = Session::builder(env)?
        .with_log_level(LogLevel::Warning)?
        .with_execution_providers([cpu])?;
    builder = builder.with_intra_threads(s.intra_op_threads.unwrap_or(1))?;
    builder = builder.with_inter_threads(s.inter_op_threads.unwrap_or(1))?;
    let level = match s.optimization_level.unwrap_or(OptimizationLevel::All) {
        OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
        OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
        OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
        OptimizationLevel::All => GraphOptimizationLevel::All,
    };
    builder = builder.with_optimization_level(level)?;
    builder.commit_from_file(path)
}

/// Input elements of a run, which its predicted cost scales with.
fn elements(inputs: &[Tensor]) -> usize {
    inputs.iter().map(|t| t.data.len()).sum()
}

fn run(
    session: &mut Session,
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
) -> Result<Vec<Tensor>, InferError> {
    let values = inputs
        .into_iter()
        .map(convert::to_input)
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = |e: ort::Error| InferError::Runtime(e.to_string());
    // Every output in the model's order (a request that names none): a plain run, without run options to build and
    // free on every request.
    let all = outputs.len() == session.outputs().len()
        && session
            .outputs()
            .iter()
            .zip(&outputs)
            .all(|(output, name)| output.name() == name);
    if all {
        let results = session.run(values).map_err(runtime)?;
        return collect_outputs(&results, outputs);
    }
    let selector = outputs
        .iter()
        .fold(OutputSelector::no_default(), |sel, name| {
            sel.with(name.clone())
        });
    let options = RunOptions::new().map_err(runtime)?.with_outputs(selector);
    let results = session
        .run_with_options(values, &options)
        .map_err(runtime)?;
    collect_outputs(&results, outputs)
}

/// The `outputs` named, in that order, copied out of a run's results.
fn collect_outputs(
    results: &SessionOutputs<'_>,
    outputs: Vec<String>,
) -> Result<Vec<Tensor>, InferError> {
    outputs
        .into_iter()
        .map(|name| match results.get(name.as_str()) {
            Some(value) => convert::from_output(name, value),
            None => Err(InferError::Output {
                output: name,
                message: "was not produced by ONNX Runtime".into(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, TensorData};

    fn iris_v2() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris/2/model.onnx")
    }

    #[tokio::test]
    async fn settings_shape_the_pool_and_concurrent_runs_share_it() {
        let env = crate::runtime::test_environment();
        let settings = SessionSettings {
            pool_size: Some(3),
            intra_op_threads: Some(2),
            inter_op_threads: Some(1),
            optimization_level: Some(OptimizationLevel::Disable),
            inline_run_max_us: None,
        };
        let model = Arc::new(
            ModelVersion::load(
                &env,
                "iris",
                2,
                &iris_v2(),
                &VersionSettings {
                    session: settings,
                    ..Default::default()
                },
                &LoadOptions::default(),
            )
            .unwrap(),
        );
        assert_eq!(model.pool.size(), 3);
        assert_eq!(
            model.signature.inputs[0].tensor(),
            Some((DataType::Fp32, &[-1, 4][..]))
        );
        let runs = (0..12).map(|i| {
            let model = Arc::clone(&model);
            tokio::spawn(async move {
                let input = Tensor {
                    name: "float_input".into(),
                    shape: vec![1, 4],
                    data: TensorData::Fp32(vec![5.1, 3.5, 1.4 + i as f32 * 0.5, 0.2]),
                };
                model.infer(vec![input], vec!["label".into()]).await
            })
        });
        for run in runs {
            let outputs = run.await.unwrap().unwrap();
            assert_eq!(outputs[0].name, "label");
            assert_eq!(outputs[0].shape, vec![1]);
        }
    }

    #[test]
    fn the_default_pool_has_at_least_one_session() {
        assert!(SessionSettings::default().effective_pool_size() >= 1);
        let zero = SessionSettings {
            pool_size: Some(0),
            ..Default::default()
        };
        assert_eq!(zero.effective_pool_size(), 1);
    }

    #[test]
    fn inline_runs_default_to_50_us_and_can_be_turned_off() {
        assert_eq!(
            SessionSettings::default().effective_inline_run_max(),
            std::time::Duration::from_micros(50)
        );
        let off: SessionSettings = toml::from_str("inline_run_max_us = 0").unwrap();
        assert_eq!(off.effective_inline_run_max(), std::time::Duration::ZERO);
    }

    #[test]
    fn a_corrupt_file_is_a_load_error_not_a_panic() {
        let env = crate::runtime::test_environment();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, b"\x08\x01not onnx").unwrap();
        let err = ModelVersion::load(
            &env,
            "bad",
            1,
            &path,
            &VersionSettings::default(),
            &LoadOptions::default(),
        )
        .unwrap_err();
        assert!(!err.is_empty());
    }

    #[tokio::test]
    async fn onnx_runtime_errors_are_infer_errors() {
        let env = crate::runtime::test_environment();
        let model = ModelVersion::load(
            &env,
            "iris",
            2,
            &iris_v2(),
            &VersionSettings::default(),
            &LoadOptions::default(),
        )
        .unwrap();
        // Bypassing validation: a wrong dtype reaches ONNX Runtime, which must fail cleanly.
        let input = Tensor {
            name: "float_input".into(),
            shape: vec![1, 4],
            data: TensorData::Int64(vec![1; 4]),
        };
        let err = model
            .infer(vec![input], vec!["label".into()])
            .await
            .unwrap_err();
        assert!(matches!(err, InferError::Runtime(_)), "{err}");
    }
}
