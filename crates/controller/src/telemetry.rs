//! Logs. The operator writes JSON lines (one event per line, fields flattened) for log pipelines; the
//! authoring commands write plain text. Nothing secret is ever a field: URLs are logged redacted
//! ([`crate::source::redact_url`]), errors name files, objects and paths, never values.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The operator's subscriber: JSON lines to `writer`, filtered by `filter` (e.g. `info`).
pub fn json_subscriber<W>(writer: W, filter: EnvFilter) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter)
        .json()
        .flatten_event(true)
        .finish()
}

/// The filter from `RUST_LOG`, or `default` (`info` for the operator, `warn` for the commands).
pub fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}
