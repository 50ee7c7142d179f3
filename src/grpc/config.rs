//! Triton's model configuration and statistics messages for a loaded version, filled in as the REST API fills in
//! their JSON forms.

use crate::model::stats::Total;
use crate::model::{IoSpec, ModelVersion};
use crate::proto::model_instance_group::Kind;
use crate::proto::{
    DataType, InferStatistics, ModelConfig, ModelInput, ModelInstanceGroup, ModelOutput,
    ModelStatistics, ModelTransactionPolicy, StatisticDuration,
};

/// The version's configuration: no server-side batch dimension (`max_batch_size` 0, so `dims` include the batch
/// dimension), its sessions as one CPU instance group, one response per request. Non-tensor outputs have no Triton
/// type and are left out.
pub fn of(target: &ModelVersion) -> ModelConfig {
    ModelConfig {
        name: target.name.clone(),
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        max_batch_size: 0,
        input: tensors(&target.signature.inputs)
            .map(|(name, data_type, dims)| ModelInput {
                name,
                data_type,
                dims,
            })
            .collect(),
        output: tensors(&target.signature.outputs)
            .map(|(name, data_type, dims)| ModelOutput {
                name,
                data_type,
                dims,
            })
            .collect(),
        instance_group: vec![ModelInstanceGroup {
            name: format!("{}_0", target.name),
            count: i32::try_from(target.pool_size()).unwrap_or(i32::MAX),
            kind: Kind::Cpu.into(),
        }],
        model_transaction_policy: Some(ModelTransactionPolicy { decoupled: false }),
    }
}

/// The tensors among `specs`: name, Triton data type and dimensions.
fn tensors(specs: &[IoSpec]) -> impl Iterator<Item = (String, i32, Vec<i64>)> + '_ {
    specs.iter().filter_map(|s| {
        let (datatype, shape) = s.tensor()?;
        let data_type =
            DataType::from_str_name(datatype.triton_config_name()).unwrap_or(DataType::TypeInvalid);
        Some((s.name.clone(), data_type.into(), shape.to_vec()))
    })
}

/// The version's inference statistics.
pub fn statistics(version: &ModelVersion) -> ModelStatistics {
    let snapshot = version.stats.read();
    let totals = snapshot.inference_stats;
    let duration = |t: Total| {
        Some(StatisticDuration {
            count: t.count,
            ns: t.ns,
        })
    };
    ModelStatistics {
        name: version.name.clone(),
        version: version.version.to_string(),
        last_inference: snapshot.last_inference,
        inference_count: snapshot.inference_count,
        execution_count: snapshot.execution_count,
        inference_stats: Some(InferStatistics {
            success: duration(totals.success),
            fail: duration(totals.fail),
            queue: duration(totals.queue),
            compute_input: duration(totals.compute_input),
            compute_infer: duration(totals.compute_infer),
            compute_output: duration(totals.compute_output),
        }),
    }
}
