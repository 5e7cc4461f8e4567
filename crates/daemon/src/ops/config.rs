//! `config`: show the home's relay settings, or change them. A new relay is
//! checked first (it answers, TLS or not as its URL says, and takes the
//! token), then kept, and every identity's link reconnects to it.

use std::sync::Arc;

use crate::api::{ApiError, Configure, Settings};
use crate::core::Daemon;
use crate::ops::Run;

impl Run for Configure {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Settings, ApiError> {
        let Configure {
            relay,
            relay_token,
            clear_relay_token,
            relay_ca,
            clear_relay_ca,
            no_check,
            retention,
        } = self;
        let retention_changed = match retention {
            Some(text) => {
                let kept = crate::retention::parse(&text)?;
                crate::retention::save(daemon, kept).await?;
                true
            }
            None => false,
        };
        let retention = crate::retention::shown(crate::retention::current(daemon).await?);
        if relay_token.is_some() && clear_relay_token || relay_ca.is_some() && clear_relay_ca {
            return Err(ApiError::invalid("give a new value or clear it, not both"));
        }
        let relay = relay
            .as_deref()
            .map(crate::link::relay_url_setting)
            .transpose()?;
        let current_url = daemon.setting("relay_url").await?;
        let current_token = daemon.setting("relay_token").await?;
        let current_ca = daemon.setting("relay_ca").await?;
        let changes = relay.is_some()
            || relay_token.is_some()
            || clear_relay_token
            || relay_ca.is_some()
            || clear_relay_ca;
        if !changes {
            return Ok(Settings {
                relay: current_url,
                relay_token: current_token.is_some(),
                relay_ca: current_ca.is_some(),
                retention,
                changed: retention_changed,
            });
        }
        let Some(url) = relay.or(current_url) else {
            return Err(ApiError::invalid(
                "this home uses the daemon's own relay on loopback, which takes no token; \
                 to use another relay, give its URL with --relay",
            ));
        };
        let token = if clear_relay_token {
            None
        } else {
            relay_token.or(current_token)
        };
        let ca = if clear_relay_ca {
            None
        } else {
            relay_ca.or(current_ca)
        };
        // Certificates that do not read are refused even with --no-check.
        crate::link::extra_roots(ca.as_deref())?;
        if !no_check {
            crate::link::probe_relay(&url, token.as_deref(), ca.as_deref())
                .await
                .map_err(|error| {
                    ApiError::new(
                        error.code,
                        format!(
                            "{}; the settings were not changed (--no-check keeps them anyway)",
                            error.message
                        ),
                    )
                })?;
        }
        let (saved_url, saved_token, saved_ca) = (url.clone(), token.clone(), ca.clone());
        daemon
            .db
            .run(move |tx| {
                tx.set_setting("relay_url", &saved_url)?;
                match &saved_token {
                    Some(token) => tx.set_setting("relay_token", token)?,
                    None => tx.remove_setting("relay_token")?,
                }
                match &saved_ca {
                    Some(ca) => tx.set_setting("relay_ca", ca),
                    None => tx.remove_setting("relay_ca"),
                }
            })
            .await?;
        // Another relay now, on purpose: its id is no surprise.
        daemon.last_relay_ids.clear();
        daemon
            .relay_changed
            .send_modify(|generation| *generation += 1);
        Ok(Settings {
            relay: Some(url),
            relay_token: token.is_some(),
            relay_ca: ca.is_some(),
            retention,
            changed: true,
        })
    }
}
