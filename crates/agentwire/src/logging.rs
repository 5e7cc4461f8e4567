//! Log setup: human-readable text or JSON lines on stderr, filtered by
//! `AGENTWIRE_LOG`: a level (`debug`) or comma-separated `target=level`
//! directives (`info,agentwire_daemon=debug`); default `info`. The most
//! specific target wins. (tracing's `Targets` filter: no regular expressions
//! or span filters, and no regex engine in the binary.)
//!
//! Other crates' logs are held to `info` whatever the filter says: below it,
//! the WebSocket, HTTP and TLS libraries print whole frames and headers,
//! which carry the relay's access token and sealed payloads.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterFn, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// `quiet_protocol` holds the MCP library to warnings whatever the filter
/// says: at debug it would log whole requests and results, which carry
/// message bodies and invite links.
pub(crate) fn init(format: LogFormat, quiet_protocol: bool) {
    let spec = std::env::var("AGENTWIRE_LOG").unwrap_or_else(|_| "info".into());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry()
        .with(filter(&spec, quiet_protocol))
        .with(FilterFn::new(at_most_info_outside));
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).init(),
    }
}

/// Whether an event may pass the cap on other crates: ours at any level,
/// theirs at `info` and above.
fn at_most_info_outside(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("agentwire") || *meta.level() <= Level::INFO
}

/// The filter for `spec` (`info` if it does not parse).
fn filter(spec: &str, quiet_protocol: bool) -> Targets {
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
        spec.to_owned()
    };
    spec.parse().unwrap_or_else(|_| {
        let fallback = if quiet_protocol {
            "info,rmcp=warn"
        } else {
            "info"
        };
        fallback.parse().unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::filter;
    use tracing::Level;

    #[test]
    fn levels_and_targets_filter_and_the_mcp_library_stays_quiet() {
        let debug = filter("debug", false);
        assert!(debug.would_enable("agentwire_daemon::link", &Level::DEBUG));
        assert!(!debug.would_enable("agentwire_daemon::link", &Level::TRACE));
        let one = filter("warn,agentwire_relay=trace", false);
        assert!(one.would_enable("agentwire_relay::server", &Level::TRACE));
        assert!(!one.would_enable("agentwire_daemon", &Level::INFO));
        // The MCP library is held to warnings, even when named.
        for spec in ["trace", "rmcp=trace", "info,rmcp::service=debug"] {
            let quiet = filter(spec, true);
            assert!(!quiet.would_enable("rmcp::service", &Level::INFO), "{spec}");
            assert!(quiet.would_enable("rmcp::service", &Level::WARN), "{spec}");
        }
        // Nonsense falls back to info.
        let fallback = filter("loud!!=max", false);
        assert!(fallback.would_enable("agentwire", &Level::INFO));
        assert!(!fallback.would_enable("agentwire", &Level::DEBUG));
    }
}
