//! Watching models in production: drift of live inputs against a version's training profile ([`drift`], exported
//! and alerted on by [`watch`]) and prediction logging with redaction ([`payload`]). Knows nothing about HTTP.

pub mod drift;
pub mod payload;
pub mod watch;
