//! The memory budget's gauges, read from the budget when scraped.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge};

use crate::memory::MemoryBudget;

/// `sluice_memory_budget_bytes`, `sluice_memory_reserved_bytes`, `sluice_memory_limit_bytes` (0: no limit) and
/// `sluice_memory_refused_total`.
pub(super) struct MemoryCollector {
    budget: MemoryBudget,
    capacity: IntGauge,
    reserved: IntGauge,
    limit: IntGauge,
    refused: IntCounter,
}

impl MemoryCollector {
    pub(super) fn new(budget: MemoryBudget, limit: Option<u64>) -> prometheus::Result<Self> {
        let collector = MemoryCollector {
            capacity: IntGauge::new(
                "sluice_memory_budget_bytes",
                "Bytes requests in flight (and, under a memory limit, loaded versions) may reserve.",
            )?,
            reserved: IntGauge::new(
                "sluice_memory_reserved_bytes",
                "Bytes reserved now by requests in flight and loaded versions.",
            )?,
            limit: IntGauge::new(
                "sluice_memory_limit_bytes",
                "The cgroup memory limit the budget was sized from (0: none).",
            )?,
            refused: IntCounter::new(
                "sluice_memory_refused_total",
                "Requests (and loads) refused because the memory budget could not hold them.",
            )?,
            budget,
        };
        collector
            .limit
            .set(limit.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)));
        Ok(collector)
    }
}

impl Collector for MemoryCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.capacity.desc(),
            self.reserved.desc(),
            self.limit.desc(),
            self.refused.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let bytes = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.capacity.set(bytes(self.budget.capacity()));
        self.reserved.set(bytes(self.budget.used()));
        self.refused
            .inc_by(self.budget.refused().saturating_sub(self.refused.get()));
        [
            self.capacity.collect(),
            self.reserved.collect(),
            self.limit.collect(),
            self.refused.collect(),
        ]
        .concat()
    }
}
