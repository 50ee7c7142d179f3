//! The bounded label values: every label whose values sluice chooses is an enum or a constant here, so a typo cannot
//! start a new series.

/// How an inference request ended, as the `outcome` label of `sluice_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ClientError,
    ServerError,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
        }
    }
}

/// The transport a request came by, as the `protocol` label of `sluice_requests_total` and
/// `sluice_request_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http, Protocol::Grpc];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// What became of one shadow job, as the `outcome` label of `sluice_shadow_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowOutcome {
    /// The shadow answered and its outputs were compared with the primary's.
    Compared,
    /// The shadow run failed.
    Error,
    /// The shadow queue was full: the job was not run.
    Dropped,
}

impl ShadowOutcome {
    pub fn label(self) -> &'static str {
        match self {
            ShadowOutcome::Compared => "compared",
            ShadowOutcome::Error => "error",
            ShadowOutcome::Dropped => "dropped",
        }
    }
}

/// The `variant` label of requests that no routing variant took: they went to the model's default version.
pub const STABLE: &str = "stable";
/// The `variant` label of requests that named a version in the URL (routing bypassed).
pub const PINNED: &str = "pinned";

/// What failed in a sync with a bucket repository, as the `operation` label of `sluice_store_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    /// Listing the bucket: the store could not be reached or refused.
    List,
    /// Downloading a file: refused, cut, stalled, or changed while it was read.
    Download,
    /// A download that arrived but does not match: its size, or its model card's sha256.
    Verify,
    /// A version not downloaded because the copy would pass `models.cache_max_bytes`.
    CacheFull,
}

impl StoreOperation {
    pub const ALL: [StoreOperation; 4] = [
        StoreOperation::List,
        StoreOperation::Download,
        StoreOperation::Verify,
        StoreOperation::CacheFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StoreOperation::List => "list",
            StoreOperation::Download => "download",
            StoreOperation::Verify => "verify",
            StoreOperation::CacheFull => "cache_full",
        }
    }
}

/// Why a model version was loaded, as the `cause` label of `sluice_model_loads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadCause {
    /// The start-up load.
    #[default]
    Startup,
    /// A change in the repository (files, `model.toml`, routing).
    Change,
    /// A lazy model's request.
    Lazy,
    /// A management load call.
    LoadCall,
}

impl LoadCause {
    pub fn label(self) -> &'static str {
        match self {
            LoadCause::Startup => "startup",
            LoadCause::Change => "change",
            LoadCause::Lazy => "lazy",
            LoadCause::LoadCall => "load_call",
        }
    }
}

/// Why spans were not exported, as the `reason` label of `sluice_trace_spans_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanDrop {
    QueueFull,
    ExportFailed,
}

impl SpanDrop {
    pub const ALL: [SpanDrop; 2] = [SpanDrop::QueueFull, SpanDrop::ExportFailed];

    pub fn label(self) -> &'static str {
        match self {
            SpanDrop::QueueFull => "queue_full",
            SpanDrop::ExportFailed => "export_failed",
        }
    }
}

/// What became of a posted truth, as the `outcome` label of `sluice_feedback_labels_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOutcome {
    Accepted,
    /// No prediction is kept under its id.
    Unknown,
    /// Its prediction left the store before it came.
    Late,
    /// Its id was labelled already.
    Duplicate,
    /// It does not fit the prediction.
    Invalid,
}

impl LabelOutcome {
    pub fn label(self) -> &'static str {
        match self {
            LabelOutcome::Accepted => "accepted",
            LabelOutcome::Unknown => "unknown",
            LabelOutcome::Late => "late",
            LabelOutcome::Duplicate => "duplicate",
            LabelOutcome::Invalid => "invalid",
        }
    }
}
