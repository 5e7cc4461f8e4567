//! The real `agentwire relay` process: durability across restarts and
//! SIGKILL, graceful shutdown, TLS, and exit codes for bad configuration.

use std::process::Command;
use std::sync::Arc;

use agentwire_client::{ClientConfig, Event, RelayClient};

use crate::util::*;

#[tokio::test]
async fn envelope_for_an_offline_recipient_survives_relay_restarts_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (a, b) = (new_key(), new_key());
    let id = new_id();

    let mut relay = RelayProcess::spawn(&home, "127.0.0.1:0", &[]);
    let (client_a, _events_a) = RelayClient::connect(relay.client_config(), Arc::new(a.clone()))
        .await
        .unwrap();
    client_a
        .send(public(&b), id, b"while you were out".to_vec())
        .await
        .unwrap();
    // Accepted means durable: killing the relay at once loses nothing.
    relay.signal("-KILL");
    relay.wait();
    drop(client_a);

    // A clean restart in between, then B comes online.
    let mut relay = RelayProcess::spawn(&home, "127.0.0.1:0", &[]);
    relay.signal("-TERM");
    assert!(relay.wait().success());
    let relay = RelayProcess::spawn(&home, "127.0.0.1:0", &[]);
    let (client_b, mut events_b) = RelayClient::connect(relay.client_config(), Arc::new(b.clone()))
        .await
        .unwrap();
    match next_event(&mut events_b).await {
        Event::Connected { queued, .. } => assert_eq!(queued, 1),
        other => panic!("expected Connected, got {other:?}"),
    }
    let envelope = next_envelope(&mut events_b).await;
    assert_eq!((envelope.id, envelope.from), (id, public(&a)));
    assert_eq!(envelope.payload, b"while you were out");
    client_b.ack(id).await.unwrap();
    drop((client_b, events_b));

    // Gone for good: not delivered again after another restart.
    drop(relay);
    let relay = RelayProcess::spawn(&home, "127.0.0.1:0", &[]);
    let (status, body) = http_get(relay.addr, "/health").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["queued_envelopes"], 0);

    // The database is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join("relay.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "relay.db has mode {mode:o}");
}

#[tokio::test]
async fn sigterm_closes_connections_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::spawn(&dir.path().join("home"), "127.0.0.1:0", &[]);
    let (_client, mut events) = RelayClient::connect(relay.client_config(), Arc::new(new_key()))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Connected { .. }
    ));
    let started = std::time::Instant::now();
    relay.signal("-TERM");
    match next_event(&mut events).await {
        Event::Disconnected { .. } => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let status = relay.wait();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < agentwire_relay::SHUTDOWN_GRACE * 2);
}

/// A `wss://` relay process with a fresh self-signed certificate for
/// `localhost` (in `dir`), and that certificate (DER).
fn tls_relay(dir: &std::path::Path) -> (RelayProcess, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let relay = RelayProcess::spawn(
        &dir.join("home"),
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    (relay, cert.cert.der().to_vec())
}

#[tokio::test]
async fn tls_relay_serves_wss_to_a_client_that_trusts_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, cert) = tls_relay(dir.path());
    assert!(relay.url.starts_with("wss://"), "{}", relay.url);
    let url = format!("wss://localhost:{}/v1/ws", relay.addr.port());

    // Without trusting the certificate: refused.
    let untrusted = RelayClient::connect(ClientConfig::new(url.clone()), Arc::new(new_key())).await;
    assert!(untrusted.is_err());

    let mut config = ClientConfig::new(url);
    config.extra_roots.push(cert);
    let (a, b) = (new_key(), new_key());
    let (client_a, _) = RelayClient::connect(config.clone(), Arc::new(a))
        .await
        .unwrap();
    let (client_b, mut events_b) = RelayClient::connect(config, Arc::new(b.clone()))
        .await
        .unwrap();
    let id = new_id();
    client_a
        .send(public(&b), id, b"over tls".to_vec())
        .await
        .unwrap();
    assert_eq!(next_envelope(&mut events_b).await.id, id);
    client_b.ack(id).await.unwrap();
}

/// Finding: at most 256 TLS handshakes were in progress for all clients, 10 s
/// each; one address holding ~300 silent sockets locked every `wss://`
/// client out.
#[tokio::test]
async fn silent_sockets_from_one_address_do_not_lock_tls_clients_out() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (relay, cert) = tls_relay(dir.path());
    // 300 silent sockets from one address: 8 at a time may wait for their
    // client hello; the others wait for their turn. Those over the address's
    // connection limit are closed at once, the rest once their first byte is
    // late.
    let mut silent = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 5], 0)))
            .unwrap();
        silent.push(socket.connect(relay.addr).await.unwrap());
    }
    // A wss:// client from elsewhere gets in at once.
    let mut config = ClientConfig::new(format!("wss://localhost:{}/v1/ws", relay.addr.port()));
    config.extra_roots.push(cert);
    let started = std::time::Instant::now();
    let connected = RelayClient::connect(config, Arc::new(new_key())).await;
    assert!(connected.is_ok(), "{:?}", connected.err());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The ones left waiting are closed once their first bytes are late.
    for socket in &mut silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut byte));
        assert!(
            matches!(read.await, Ok(Ok(0) | Err(_))),
            "a silent socket was kept"
        );
    }
}

/// Runs the binary with `args`; returns exit code and stderr.
fn run(args: &[&str]) -> (i32, String) {
    let output = Command::new(agentwire_bin()).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_relay_configuration_gets_a_specific_error_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.to_str().unwrap();

    let (code, stderr) = run(&["--home", home, "relay", "--listen", "not-an-address"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");

    let (code, stderr) = run(&["--home", home, "relay", "--envelope-ttl", "forever"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("such as"), "{stderr}");

    let (code, stderr) = run(&["--home", home, "relay", "--tls-cert", "c.pem"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");

    let missing = dir.path().join("missing-token");
    let (code, stderr) = run(&[
        "--home",
        home,
        "relay",
        "--access-token-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("cannot read the access token file"),
        "{stderr}"
    );

    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let (code, stderr) = run(&[
        "--home",
        home,
        "relay",
        "--access-token-file",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("1 to 512 bytes"), "{stderr}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not pem").unwrap();
    let g = garbage.to_str().unwrap();
    let (code, stderr) = run(&["--home", home, "relay", "--tls-cert", g, "--tls-key", g]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");

    let open_home = dir.path().join("open-home");
    std::fs::create_dir(&open_home).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, stderr) = run(&["--home", open_home.to_str().unwrap(), "relay"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("chmod 700"), "{stderr}");

    // The port is taken by a listener of our own.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run(&["--home", home, "relay", "--listen", &addr]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
}

#[test]
fn help_teaches_the_relay_flags() {
    let output = Command::new(agentwire_bin())
        .args(["relay", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--db",
        "--access-token-file",
        "--tls-cert",
        "--tls-key",
        "--log-format",
        "--max-frame-bytes",
        "--max-connections",
        "--max-connections-per-ip",
        "--key-rate",
        "--ip-rate",
        "--max-queue",
        "--envelope-ttl",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

/// The relay raises its soft limit on open files to the hard one at start,
/// so that a default soft limit of a few hundred does not cap its
/// connections.
#[test]
fn the_relay_raises_its_open_files_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "h=$(ulimit -Hn); s=256; [ \"$h\" != unlimited ] && [ \"$h\" -le 256 ] && s=$((h / 2)); \
         ulimit -Sn $s && exec '{}' --home '{}' relay --listen 127.0.0.1:0 --json",
        agentwire_bin().display(),
        dir.path().join("home").display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = startup_line(&mut child);
    assert_eq!(started["event"], "listening", "{started}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let words: Vec<&str> = open_files.split_whitespace().collect();
    // "Max open files SOFT HARD files": the soft limit was lowered below
    // the hard one before the relay started.
    let (soft, hard) = (words[3], words[4]);
    assert_eq!(soft, hard, "{open_files}");
}

/// Finding: `/health` and `/metrics` needed no token even on a relay with
/// `--access-token-file`, and exact byte counters reveal each message's size
/// and timing.
#[tokio::test]
async fn metrics_and_health_counts_need_the_metrics_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("metrics-token");
    std::fs::write(&token, "count-reader\n").unwrap();
    let relay = RelayProcess::spawn(
        &dir.path().join("home"),
        "127.0.0.1:0",
        &["--metrics-token-file", token.to_str().unwrap()],
    );
    // Without the token (even from loopback): refused, and /health says
    // only that the relay serves.
    let (status, body) = http_get(relay.addr, "/metrics").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert!(!body.contains("agentwire_relay_bytes"), "{body}");
    let (status, body) =
        http_get_with(relay.addr, "/metrics", "Authorization: Bearer wrong\r\n").await;
    assert_eq!(status, 401, "{body}");
    let (_, body) = http_get(relay.addr, "/health").await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["relay_id"].is_string());
    for count in ["connections", "queued_envelopes", "uptime_secs"] {
        assert!(health.get(count).is_none(), "{count} in {health}");
    }
    // With it: everything.
    let bearer = "Authorization: Bearer count-reader\r\n";
    let (status, body) = http_get_with(relay.addr, "/metrics", bearer).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("agentwire_relay_bytes_in_total"), "{body}");
    let (_, body) = http_get_with(relay.addr, "/health", bearer).await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["queued_envelopes"], 0, "{health}");
}

/// Finding 8: about 128 KB per idle authenticated connection (the WebSocket
/// library's default read buffer). 500 idle connections to a relay process
/// must cost well under a quarter of that each (about 7 KB is measured, see
/// BENCHMARKS.md; the bound leaves room for the allocator's noise).
#[tokio::test]
async fn idle_connections_cost_a_few_kilobytes_each_not_a_read_buffer() {
    const CONNECTIONS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::spawn(
        &dir.path().join("home"),
        "127.0.0.1:0",
        &[
            "--max-connections-per-ip",
            "1000",
            "--max-connections",
            "1000",
        ],
    );
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", relay.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let config = relay.client_config();
    // One connection first, so that what all share is counted before.
    let _first = agentwire_client::Connection::open(&config, &new_key())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = rss();
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        held.push(
            agentwire_client::Connection::open(&config, &new_key())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let per = rss().saturating_sub(before) / CONNECTIONS as u64;
    println!("{CONNECTIONS} idle connections: {per} bytes each");
    assert!(per < 32 * 1024, "{per} bytes per idle connection");
}
