//! How long messages are kept: a read message (and a sent one that ended:
//! read, expired or failed), with the tasks that ended and their output, is
//! deleted once the retention has passed (default 30 days; `agentwire config
//! --retention`). A sweep runs at start and then at a quarter of the
//! retention, at most hourly.

use std::sync::Arc;
use std::time::Duration;

use crate::api::ApiError;
use crate::core::{Daemon, now_ms};

/// The retention when none is set.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest retention accepted.
const MIN_RETENTION: Duration = Duration::from_secs(1);

/// The setting's key: seconds, or absent for the default, or `forever`.
const SETTING: &str = "retention";

/// `30d`, `12h`, ... or `forever` (`None`).
pub(crate) fn parse(text: &str) -> Result<Option<Duration>, ApiError> {
    if text == "forever" {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(kept) if kept >= MIN_RETENTION => Ok(Some(kept)),
        Ok(_) => Err(ApiError::invalid(format!(
            "--retention {text} is shorter than a second; give a duration such as 30d, or forever"
        ))),
        Err(error) => Err(ApiError::invalid(format!(
            "--retention {text:?} is not a duration ({error}); give one such as 30d or 12h, or forever"
        ))),
    }
}

/// As `config` shows it.
pub(crate) fn shown(kept: Option<Duration>) -> String {
    match kept {
        Some(kept) => humantime::format_duration(kept).to_string(),
        None => "forever".into(),
    }
}

/// Keeps the retention.
pub(crate) async fn save(daemon: &Daemon, kept: Option<Duration>) -> Result<(), ApiError> {
    let value = kept.map_or_else(|| "forever".to_owned(), |k| k.as_secs().to_string());
    daemon
        .db
        .run(move |tx| tx.set_setting(SETTING, &value))
        .await?;
    daemon.retention_changed.notify_one();
    Ok(())
}

/// The retention in force (`None`: forever).
pub(crate) async fn current(daemon: &Daemon) -> Result<Option<Duration>, ApiError> {
    Ok(match daemon.setting(SETTING).await?.as_deref() {
        None => Some(DEFAULT_RETENTION),
        Some("forever") => None,
        Some(secs) => Some(
            secs.parse()
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_RETENTION),
        ),
    })
}

/// Sweeps until the daemon stops.
pub(crate) async fn sweep(daemon: Arc<Daemon>) {
    loop {
        let kept = current(&daemon).await.unwrap_or(Some(DEFAULT_RETENTION));
        if let Some(kept) = kept {
            let cutoff =
                now_ms().saturating_sub(u64::try_from(kept.as_millis()).unwrap_or(u64::MAX));
            match daemon.db.run(move |tx| tx.forget_before(cutoff)).await {
                Ok(0) => {}
                Ok(forgotten) => tracing::info!(forgotten, "forgot messages past their retention"),
                Err(error) => tracing::warn!(%error, "cannot forget old messages"),
            }
        }
        let every = kept.map_or(Duration::from_secs(3600), |k| {
            (k / 4).clamp(Duration::from_millis(250), Duration::from_secs(3600))
        });
        tokio::select! {
            () = daemon.shutdown.cancelled() => return,
            () = daemon.retention_changed.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
    }
}
