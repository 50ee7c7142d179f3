//! `sluice check <repository>`: validates a model repository offline, for CI pipelines before a deployment.
//!
//! Loads every version with ONNX Runtime, prints each signature, checks every `model.toml`, that a pinned
//! `default_version` exists, and (with `--routing`) that the routing file parses and every version it refers to is
//! in the repository and loads. Returns the problems found; the binary exits non-zero when there are any.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use ort::environment::Environment;

use crate::model::{
    IoSpec, LoadOptions, ModelVersion, SessionSettings, Signature, VersionSettings,
};
use crate::repository;
use crate::routing::RoutingPolicy;

/// The outcome of a check: a human-readable report and the problems in it.
#[derive(Debug, Default)]
pub struct Report {
    pub text: String,
    pub problems: Vec<String>,
}

impl Report {
    fn problem(&mut self, message: String) {
        let _ = writeln!(self.text, "  PROBLEM: {message}");
        self.problems.push(message);
    }
}

/// Checks `root` (and `routing`, when given).
pub fn check(env: &Environment, root: &Path, routing: Option<&Path>) -> Report {
    let mut report = Report::default();
    let models = match repository::scan(root) {
        Ok(models) => models,
        Err(e) => {
            report.problem(e.to_string());
            return report;
        }
    };
    if models.is_empty() {
        report.problem(format!("no models in {}", root.display()));
    }
    // Which versions of each model loaded, with their signatures, for the routing check.
    let mut loadable: Loadable = BTreeMap::new();
    for model in &models {
        let loaded = check_model(&mut report, env, model);
        if !loaded.is_empty() {
            loadable.insert(model.name.clone(), loaded);
        }
    }
    if let Some(path) = routing {
        check_routing(&mut report, path, &loadable);
    }
    let verdict = if report.problems.is_empty() {
        "repository OK".to_owned()
    } else {
        format!("{} problem(s)", report.problems.len())
    };
    let _ = writeln!(report.text, "{verdict}");
    report
}

/// Checks one model directory: its `model.toml`, every version, the pinned default. Returns the signatures of the
/// versions that loaded.
fn check_model(
    report: &mut Report,
    env: &Environment,
    model: &repository::ModelDir,
) -> BTreeMap<u64, Signature> {
    let _ = writeln!(report.text, "model {}", model.name);
    let config = match &model.config {
        Ok(config) => config.clone(),
        Err(e) => {
            report.problem(format!("model '{}': invalid model.toml: {e}", model.name));
            Default::default()
        }
    };
    if model.versions.is_empty() {
        report.problem(format!(
            "model '{}': no integer version directories",
            model.name
        ));
    }
    // One session is enough to prove a file loads.
    let settings = VersionSettings {
        session: SessionSettings {
            pool_size: Some(1),
            ..config.session.clone()
        },
        batching: config.batching.clone(),
        warmup: config.warmup.clone(),
    };
    let mut loaded = BTreeMap::new();
    for v in &model.versions {
        if let Some(signature) = check_version(report, env, &model.name, v, &settings) {
            loaded.insert(v.version, signature);
        }
    }
    if let Some(pinned) = config.default_version {
        if !model.versions.iter().any(|v| v.version == pinned) {
            report.problem(format!(
                "model '{}': default_version {pinned} is not in the repository",
                model.name
            ));
        }
    }
    loaded
}

/// Loads one version and describes it; its signature when it loaded.
fn check_version(
    report: &mut Report,
    env: &Environment,
    model: &str,
    v: &repository::VersionDir,
    settings: &VersionSettings,
) -> Option<Signature> {
    let loaded = match ModelVersion::load(
        env,
        model,
        v.version,
        &v.model_path,
        settings,
        &LoadOptions::default(),
    ) {
        Ok(loaded) => loaded,
        Err(e) => {
            report.problem(format!("model '{model}' version {}: {e}", v.version));
            return None;
        }
    };
    let extras = [
        loaded.card.as_ref().map(|c| {
            if c.sha256.is_some() {
                "card, checksum verified"
            } else {
                "card"
            }
        }),
        loaded.drift.as_ref().map(|_| "drift reference profile"),
    ];
    let extras: Vec<&str> = extras.into_iter().flatten().collect();
    let _ = writeln!(
        report.text,
        "  version {}: ok ({})",
        v.version,
        if extras.is_empty() {
            "no card, no reference profile".to_owned()
        } else {
            extras.join(", ")
        }
    );
    describe(&mut report.text, "input", &loaded.signature.inputs);
    describe(&mut report.text, "output", &loaded.signature.outputs);
    Some(loaded.signature.clone())
}

fn describe(text: &mut String, what: &str, specs: &[IoSpec]) {
    for spec in specs {
        let meta = spec.metadata();
        let _ = writeln!(
            text,
            "    {what} {}: {} {:?}",
            spec.name, meta.datatype, meta.shape
        );
    }
}

/// The versions of each model that loaded, with their signatures.
type Loadable = BTreeMap<String, BTreeMap<u64, Signature>>;

fn check_routing(report: &mut Report, path: &Path, loadable: &Loadable) {
    let _ = writeln!(report.text, "routing {}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return report.problem(format!("routing file {}: {e}", path.display())),
    };
    let policies: BTreeMap<String, RoutingPolicy> = match toml::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            return report.problem(format!("routing file {}: {}", path.display(), e.message()))
        }
    };
    for (model, policy) in &policies {
        if let Err(e) = policy.validate() {
            report.problem(format!("routing for '{model}': {e}"));
        }
        for version in policy.versions() {
            if !loadable
                .get(model)
                .is_some_and(|vs| vs.contains_key(&version))
            {
                report.problem(format!("routing for '{model}' refers to version {version}, which is not a loadable version"));
            }
        }
        if let Some(versions) = loadable.get(model) {
            // No default here: the stable version and the variants are checked.
            let problems = crate::routing::shadow_incompatibilities(policy, None, |v| {
                versions.get(&v).cloned()
            });
            for problem in problems {
                report.problem(format!("routing for '{model}': {problem}"));
            }
        }
        let _ = writeln!(report.text, "  {model}: ok");
    }
}
