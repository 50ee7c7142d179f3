//! Watching models in production: drift of live inputs against a version's training profile ([`drift`], exported
//! and alerted on by [`watch`]), prediction logging with redaction ([`payload`]) and model quality from delayed
//! ground truth ([`feedback`]). Knows nothing about HTTP.

pub mod drift;
pub mod feedback;
pub mod payload;
pub mod watch;
