//! `agentwire relay`: resolve flags into a [`RelayConfig`], run the relay until
//! SIGINT or SIGTERM, then shut it down gracefully.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use agentwire_relay::{
    AccessToken, Database, Limits, RateLimit, Relay, RelayConfig, RelayError, TlsFiles,
};
use anyhow::{Context, anyhow};

use crate::cli::{GlobalArgs, RelayArgs};
use crate::exit::{CANNOT_START, CONFIG, Failure, WithCode};
use agentwire_daemon::Home;

pub(crate) fn run(global: &GlobalArgs, args: RelayArgs) -> Result<(), Failure> {
    let config = resolve(global, &args)?;
    let runtime = crate::runtime(None)?;
    runtime.block_on(serve(config, args.json))
}

fn resolve(global: &GlobalArgs, args: &RelayArgs) -> Result<RelayConfig, Failure> {
    let database = match args.db.as_deref() {
        Some("") => {
            return Err(Failure::new(
                CONFIG,
                anyhow!("--db is empty; give a SQLite file or a postgres:// URL"),
            ));
        }
        Some(arg) => match Database::from_arg(arg) {
            Database::Postgres(mut postgres) => {
                postgres.pool_size = usize::from(args.db_pool_size);
                Database::Postgres(postgres)
            }
            sqlite => sqlite,
        },
        None => {
            let home = Home::resolve(global.home.as_deref()).code(CONFIG)?;
            home.ensure().code(CONFIG)?;
            Database::Sqlite(home.relay_db())
        }
    };
    let access_token = args
        .access_token_file
        .as_deref()
        .map(|path| read_token(path, "access token"))
        .transpose()
        .code(CONFIG)?;
    let metrics_token = args
        .metrics_token_file
        .as_deref()
        .map(|path| read_token(path, "metrics token"))
        .transpose()
        .code(CONFIG)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let l = &args.limits;
    Ok(RelayConfig {
        listen: args.listen,
        database,
        access_token,
        tls,
        metrics_token,
        limits: Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            key_rate: RateLimit::per_second(l.key_rate),
            ip_rate: RateLimit::per_second(l.ip_rate),
            max_queue_per_recipient: l.max_queue,
            max_queue_per_sender: l
                .max_queue_per_sender
                .unwrap_or((l.max_queue / 4).max(1))
                .min(l.max_queue),
            envelope_ttl: l.envelope_ttl,
            max_directory_entries: l.max_directory_entries,
            auth_timeout: l.auth_timeout,
            ping_interval: l.ping_interval,
        },
    })
}

/// Reads a token (`what`: "access token", "metrics token"): the file's
/// first line without surrounding whitespace.
fn read_token(path: &Path, what: &str) -> anyhow::Result<AccessToken> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the {what} file is readable by others; run `chmod 600` on it"
        );
    }
    let token = text.lines().next().unwrap_or("").trim();
    AccessToken::new(token.as_bytes().to_vec()).ok_or_else(|| {
        anyhow!(
            "the {what} in {} must be 1 to {} bytes on its first line (it is {} bytes)",
            path.display(),
            agentwire_wire::MAX_ACCESS_TOKEN_LEN,
            token.len()
        )
    })
}

async fn serve(config: RelayConfig, json: bool) -> Result<(), Failure> {
    let db = config.database.to_string();
    let backend = config.database.backend();
    let (before, after) = agentwire_relay::raise_open_files_limit();
    let show = |limit: Option<u64>| limit.map_or("unlimited".to_owned(), |n| n.to_string());
    if before != after {
        tracing::info!(
            from = %show(before),
            to = %show(after),
            "raised the limit on open files (one per connection)"
        );
    }
    if let Some(limit) = after
        && (limit as usize) < config.limits.max_connections + 64
    {
        tracing::warn!(
            open_files = limit,
            max_connections = config.limits.max_connections,
            "the limit on open files is below --max-connections; raise the hard limit (ulimit -Hn) or lower --max-connections"
        );
    }
    let stop = shutdown_signal();
    let relay = Relay::spawn(config).await.map_err(|error| {
        let code = match error {
            RelayError::Tls(_) => CONFIG,
            RelayError::Store { .. } | RelayError::Bind { .. } => CANNOT_START,
        };
        Failure::new(code, error)
    })?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "listening",
                "url": relay.url(),
                "addr": relay.local_addr().to_string(),
                "relay_id": relay.relay_id().to_hex(),
                "db": db,
                "backend": backend,
            })
        );
    } else {
        println!(
            "agentwire relay listening on {} (relay id {}, database {db})",
            relay.url(),
            relay.relay_id()
        );
    }
    stop.await;
    tracing::info!("shutting down");
    relay.shutdown().await;
    Ok(())
}

/// Watches SIGINT and SIGTERM from now on (so a signal that arrives before the
/// returned future is first polled is not lost); resolves on the first.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let watched = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut terminate), Ok(mut interrupt)) = watched else {
            tracing::warn!("cannot watch SIGINT/SIGTERM");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
}
