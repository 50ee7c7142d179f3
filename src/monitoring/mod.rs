//! Watching models in production: drift of live inputs against a version's training profile ([`drift`]).
//! Knows nothing about HTTP.

pub mod drift;
pub mod watch;
