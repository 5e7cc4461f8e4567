//! Findings about the local machine: other local users, files in the home,
//! logs. Each test is named after what an attacker did.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::process::{Command, Stdio};

use crate::util::*;

/// Whether this runs as root (which can give files to another user).
fn root() -> bool {
    agentwire_daemon::home::current_uid() == 0
}

/// Finding: another local user who made the home first (private to them,
/// with their own key and an empty store) later read everything the
/// victim's identity received.
#[test]
fn a_home_made_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = if root() {
        let home = dir.path().join("home");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&home)
            .unwrap();
        std::fs::write(home.join("key"), [1u8; 32]).unwrap();
        std::fs::write(home.join("agentwire.db"), b"").unwrap();
        for file in ["key", "agentwire.db"] {
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
            std::fs::set_permissions(home.join(file), private).unwrap();
        }
        for path in [home.join("key"), home.join("agentwire.db"), home.clone()] {
            std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).unwrap();
        }
        home
    } else {
        // Not root: a directory root owns stands in for the other user's.
        std::path::PathBuf::from("/")
    };
    let run = |args: &[&str]| {
        Run::from(
            Command::new(agentwire_bin())
                .arg("--home")
                .arg(&home)
                .args(args)
                .env_remove("AGENTWIRE_AGENT")
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    };
    for args in [&["init", "--name", "victim"][..], &["send", "x", "hello"]] {
        let refused = run(args);
        assert_eq!(refused.code, 3, "{args:?}: {refused:?}");
        assert!(
            refused.stderr.contains("belongs to another user"),
            "{}",
            refused.stderr
        );
    }
}

/// A daemon socket another user made is never connected to: their daemon
/// would read every request.
#[test]
fn a_daemon_socket_of_another_user_is_refused() {
    if !root() {
        return; // only root can give a socket away
    }
    let home = TestHome::new();
    home.run(&["init", "--name", "alice"]).ok();
    let socket = home.path().join("daemon.sock");
    std::os::unix::fs::lchown(&socket, Some(65534), Some(65534)).unwrap();
    let refused = home.run(&["whoami"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("belongs to another user"),
        "{}",
        refused.stderr
    );
    std::os::unix::fs::lchown(&socket, Some(0), Some(0)).unwrap();
    home.run(&["whoami"]).ok();
}

/// Finding: at `AGENTWIRE_LOG=trace` the WebSocket library printed the whole
/// Hello frame, access token included, into `daemon.log`.
#[test]
fn trace_logs_never_hold_the_relay_access_token() {
    let relay_dir = tempfile::tempdir().unwrap();
    let secret = "tok3n-that-must-never-be-logged";
    let token_file = relay_dir.path().join("token");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    let token_path = token_file.to_str().unwrap();
    let relay = RelayProcess::spawn(
        &relay_dir.path().join("home"),
        "127.0.0.1:0",
        &["--access-token-file", token_path],
    );
    let home = TestHome::new();
    home.run(&[
        "init",
        "--name",
        "alice",
        "--relay",
        &relay.url,
        "--relay-token-file",
        token_path,
    ])
    .ok();
    home.run(&["daemon", "stop"]).ok();
    // The daemon the next command starts inherits the filter.
    let output = Command::new(agentwire_bin())
        .arg("--home")
        .arg(home.path())
        .arg("invite")
        .env("AGENTWIRE_LOG", "trace")
        .env_remove("AGENTWIRE_AGENT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    home.run(&["daemon", "stop"]).ok();
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap();
    // Not a vacuous pass: the log is at trace, and the link was made.
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let decimal = secret
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for form in [secret, hex.as_str(), decimal.as_str()] {
        assert!(!log.contains(form), "the token is in daemon.log as {form}");
    }
}

/// Finding: the daemon's built-in loopback relay had no access token: any
/// local user filled its store, read `/health` and `/metrics`, and held its
/// per-IP connection slots so the daemon could not reconnect.
#[tokio::test]
async fn the_local_relay_admits_only_its_own_daemon() {
    use agentwire_client::{ClientConfig, ClientError, RelayClient};
    use std::sync::Arc;
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    let status = home.run(&["--json", "daemon", "status"]).ok().json();
    assert_eq!(status["local_relay"], true, "{status}");
    let url = status["relay"].as_str().unwrap().to_owned();
    // Another local user, with a key of its own: refused at the hello.
    let refused = RelayClient::connect(ClientConfig::new(url.clone()), Arc::new(new_key())).await;
    match refused {
        Err(error @ ClientError::Rejected { .. }) => {
            assert_eq!(error.code(), Some(agentwire_wire::ErrorCode::AccessDenied));
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a stranger got onto the local relay"),
    }
    // Its counts are not for other local users either.
    let addr: SocketAddr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/ws")
        .parse()
        .unwrap();
    let (status, _) = http_get(addr, "/metrics").await;
    assert_eq!(status, 401);
    let (_, body) = http_get(addr, "/health").await;
    assert!(!body.contains("queued_envelopes"), "{body}");
    // Silent connections do not take the daemon's slots: with 300 of them
    // open (more than a public relay's 256 per IP), a new identity's link
    // still gets on at once.
    // The attacker reopens each one the relay drops.
    let stop = tokio_util::sync::CancellationToken::new();
    for _ in 0..300 {
        let (stop, url) = (stop.clone(), url.clone());
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while !stop.is_cancelled() {
                // Upgraded, then silent: it never answers the challenge.
                let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url.as_str()).await
                else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = async { while let Some(Ok(_)) = socket.next().await {} } => {}
                }
            }
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let home = tokio::task::spawn_blocking(move || {
        home.run(&["init", "--name", "c"]).ok();
        home.run(&["send", "c", "still here"]).ok();
        let got = home
            .run(&["--json", "--as", "c", "recv", "--wait", "5s"])
            .ok()
            .json();
        assert_eq!(got["messages"][0]["body"], "still here");
        home
    })
    .await
    .unwrap();
    stop.cancel();
    drop(home);
}
