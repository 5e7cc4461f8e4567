//! Log setup: human-readable text or JSON lines on stderr, filtered by
//! `AGENTWIRE_LOG` (tracing's env-filter syntax, default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// `quiet_protocol` holds the MCP library to warnings whatever the filter
/// says: at debug it would log whole requests and results, which carry
/// message bodies and invite links.
pub(crate) fn init(format: LogFormat, quiet_protocol: bool) {
    let spec = std::env::var("AGENTWIRE_LOG").unwrap_or_else(|_| "info".into());
    let spec = if quiet_protocol {
        // Any directive of the user's that names the MCP library goes (a
        // more specific one would win over ours), then ours caps it.
        let mut kept: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && !d.starts_with("rmcp"))
            .collect();
        kept.push("rmcp=warn");
        kept.join(",")
    } else {
        spec
    };
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
