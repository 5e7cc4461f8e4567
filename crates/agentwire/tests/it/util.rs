//! Fixtures shared by every integration test: real relays (in-process or as a
//! child process of the real binary) on 127.0.0.1 port 0, real clients, and a
//! raw WebSocket for tests that must see or forge individual frames.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agentwire_client::{ClientConfig, ClientError, Event, Events, RelayClient, Signer};
use agentwire_relay::{Limits, Relay, RelayConfig};
use agentwire_wire::{Body, EnvelopeId, ErrorCode, Frame, PublicKey};
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh random identity key.
pub fn new_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    SigningKey::from_bytes(&seed)
}

pub fn public(key: &SigningKey) -> PublicKey {
    Signer::public_key(key)
}

/// A fresh random envelope id.
pub fn new_id() -> EnvelopeId {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).unwrap();
    EnvelopeId::from_bytes(id)
}

/// Which storage engine a test's relay uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server of this test process, started on first use (each
/// test that uses it gets a database of its own).
pub fn postgres() -> &'static crate::pg_server::PgServer {
    static SERVER: std::sync::OnceLock<crate::pg_server::PgServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        crate::pg_server::PgServer::start(false)
            .unwrap_or_else(|error| panic!("cannot start PostgreSQL for the tests: {error}"))
    })
}

/// A fresh, empty PostgreSQL database on the test server.
pub fn postgres_database() -> agentwire_relay::Database {
    let url = postgres().create_database().unwrap();
    agentwire_relay::Database::Postgres(agentwire_relay::PostgresConfig::new(url))
}

/// Declares, for each named `async fn NAME(store: Store)`, one test per
/// storage engine: `sqlite::NAME` and `postgres::NAME`, with the same body.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::util::Store::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::util::Store::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_both_stores;

/// An in-process relay with its own temporary database.
pub struct TestRelay {
    pub relay: Option<Relay>,
    pub dir: tempfile::TempDir,
    pub config: RelayConfig,
}

impl TestRelay {
    pub async fn start() -> TestRelay {
        Self::with(|_| {}).await
    }

    /// Starts a relay whose configuration `adjust` may change first.
    pub async fn with(adjust: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        Self::on(Store::Sqlite, adjust).await
    }

    /// Starts a relay on `store` (a fresh database) whose configuration
    /// `adjust` may change first.
    pub async fn on(store: Store, adjust: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        let database = match store {
            Store::Sqlite => agentwire_relay::Database::Sqlite(dir.path().join("relay.db")),
            Store::Postgres => tokio::task::spawn_blocking(postgres_database)
                .await
                .unwrap(),
        };
        let mut config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), database);
        adjust(&mut config);
        let relay = Relay::spawn(config.clone()).await.unwrap();
        // Restarts reuse the port the first start got.
        config.listen = relay.local_addr();
        let relay = TestRelay {
            relay: Some(relay),
            dir,
            config,
        };
        let backend = match store {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        };
        let health = relay.health().await;
        assert_eq!(health["backend"], backend, "{health}");
        assert_eq!(health["database"], "ok", "{health}");
        relay
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.config.listen)
    }

    pub fn addr(&self) -> SocketAddr {
        self.config.listen
    }

    pub async fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await;
        }
    }

    /// Stops and starts again on the same port and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.relay = Some(Relay::spawn(self.config.clone()).await.unwrap());
    }

    pub fn client_config(&self) -> ClientConfig {
        quick_client_config(&self.url())
    }

    /// A connected client for `key`.
    pub async fn client(&self, key: &SigningKey) -> (RelayClient, Events) {
        connected_client(&self.url(), key).await
    }

    pub async fn health(&self) -> serde_json::Value {
        let (status, body) = http_get(self.addr(), "/health").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.addr(), "/metrics").await;
        assert_eq!(status, 200);
        body
    }

    /// Asserts the relay still serves: a fresh pair of clients exchanges an
    /// envelope.
    pub async fn assert_serving(&self) {
        let (a, b) = (new_key(), new_key());
        let (client_a, _events_a) = self.client(&a).await;
        let (client_b, mut events_b) = self.client(&b).await;
        let id = new_id();
        client_a
            .send(public(&b), id, b"still serving".to_vec())
            .await
            .unwrap();
        let envelope = next_envelope(&mut events_b).await;
        assert_eq!(envelope.id, id);
        client_b.ack(id).await.unwrap();
    }
}

/// A client configuration for `urls` (one relay URL, or a cluster's
/// comma-separated) that reconnects quickly.
pub fn quick_client_config(urls: &str) -> ClientConfig {
    let mut config = ClientConfig::new(urls);
    config.backoff.initial = Duration::from_millis(50);
    config.backoff.max = Duration::from_millis(500);
    config
}

/// A client for `key` connected to the relay at `urls`, past its
/// `Connected` event.
pub async fn connected_client(urls: &str, key: &SigningKey) -> (RelayClient, Events) {
    let (client, mut events) =
        RelayClient::connect(quick_client_config(urls), Arc::new(key.clone()))
            .await
            .unwrap();
    match next_event(&mut events).await {
        Event::Connected { .. } => {}
        other => panic!("expected Connected, got {other:?}"),
    }
    (client, events)
}

pub async fn limits_relay(adjust: impl FnOnce(&mut Limits)) -> TestRelay {
    TestRelay::with(|config| adjust(&mut config.limits)).await
}

/// [`limits_relay`] on `store`.
pub async fn limits_relay_on(store: Store, adjust: impl FnOnce(&mut Limits)) -> TestRelay {
    TestRelay::on(store, |config| adjust(&mut config.limits)).await
}

/// The next event, failing the test after [`WAIT`].
pub async fn next_event(events: &mut Events) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no event in time")
        .expect("event stream ended")
}

/// The next delivered envelope, skipping other events.
pub async fn next_envelope(events: &mut Events) -> agentwire_client::Envelope {
    loop {
        if let Event::Envelope(envelope) = next_event(events).await {
            return envelope;
        }
    }
}

/// Asserts that no envelope arrives within `quiet`.
pub async fn assert_no_envelope(events: &mut Events, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return,
            Ok(Some(Event::Envelope(envelope))) => panic!("unexpected envelope {envelope:?}"),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended"),
        }
    }
}

/// The relay's refusal code of a failed request.
pub fn rejected_code(result: Result<(), ClientError>) -> (ErrorCode, u64) {
    match result {
        Err(ClientError::Rejected { code, limit, .. }) => (code, limit),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// A WebSocket that speaks frames by hand.
pub struct RawWs {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawWs {
    pub async fn connect(relay: &TestRelay) -> RawWs {
        let (ws, _) = tokio_tungstenite::connect_async(relay.url()).await.unwrap();
        RawWs { ws }
    }

    /// Connects from another loopback address (a different "IP").
    pub async fn connect_from(relay: &TestRelay, source: [u8; 4]) -> RawWs {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let stream = socket.connect(relay.addr()).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(relay.url(), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        RawWs { ws }
    }

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    pub async fn send(&mut self, frame: Frame) {
        self.send_bytes(frame.encode()).await;
    }

    /// The next frame, or `None` when the relay closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("no frame in time");
            match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Binary(bytes))) => return Some(Frame::decode(&bytes).unwrap()),
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn expect(&mut self) -> Frame {
        self.recv().await.expect("connection closed")
    }

    /// The challenge, then a hello signed by `key`; returns the welcome.
    pub async fn authenticate(&mut self, key: &SigningKey) -> Frame {
        let hello = self.hello_for_challenge(key, Vec::new()).await;
        self.send(hello).await;
        self.expect().await
    }

    /// Reads the challenge and builds a correct hello for it.
    pub async fn hello_for_challenge(&mut self, key: &SigningKey, token: Vec<u8>) -> Frame {
        let Body::Challenge {
            relay_id,
            nonce,
            issued_at_ms,
        } = self.expect().await.body
        else {
            panic!("expected a challenge");
        };
        let public_key = public(key);
        let message = agentwire_wire::auth_message(&relay_id, &nonce, issued_at_ms, &public_key);
        Frame::new(
            1,
            Body::Hello {
                nonce,
                public_key,
                signature: Signer::sign(key, &message),
                access_token: token,
            },
        )
    }

    /// Asserts the next frame is an error with `code` for `request_id`;
    /// returns its limit and message.
    pub async fn expect_error(&mut self, request_id: u32, code: ErrorCode) -> (u64, String) {
        let frame = self.expect().await;
        match frame.body {
            Body::Error {
                code: got,
                limit,
                message,
            } => {
                assert_eq!(got, code, "{message}");
                assert_eq!(frame.request_id, request_id, "{message}");
                (limit, message)
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Asserts the relay closes the connection next.
    pub async fn expect_closed(&mut self) {
        if let Some(frame) = self.recv().await {
            panic!("expected the connection to close, got {frame:?}");
        }
    }
}

/// A minimal HTTP/1.1 GET; returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, "").await
}

/// `GET path` with extra header lines (each ending in `\r\n`).
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    parse_http_response(&String::from_utf8_lossy(&response))
}

/// An HTTP/1.1 response's status and body.
pub fn parse_http_response(response: &str) -> (u16, String) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `agentwire` binary under test.
pub fn agentwire_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentwire"))
}

/// The first line a child printed on its piped stdout, as JSON (the
/// startup line of `relay --json`, `bridge --json`, ...).
pub fn startup_line(child: &mut Child) -> serde_json::Value {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad startup line {line:?}: {e}"))
}

/// `agentwire relay` as a child process of the real binary.
pub struct RelayProcess {
    child: Child,
    pub url: String,
    pub addr: SocketAddr,
}

impl RelayProcess {
    /// Starts `agentwire --home HOME relay --listen LISTEN --json EXTRA..` and
    /// waits for its startup line.
    pub fn spawn(home: &Path, listen: &str, extra: &[&str]) -> RelayProcess {
        RelayProcess::spawn_via(&[], home, listen, extra)
    }

    /// As [`RelayProcess::spawn`], run through `prefix` (a command such as
    /// `nsenter ... --` that execs the rest).
    pub fn spawn_via(prefix: &[String], home: &Path, listen: &str, extra: &[&str]) -> RelayProcess {
        let mut child = RelayProcess::command(prefix)
            .arg("--home")
            .arg(home)
            .args(["relay", "--listen", listen, "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let startup = startup_line(&mut child);
        RelayProcess {
            child,
            url: startup["url"].as_str().unwrap().to_owned(),
            addr: startup["addr"].as_str().unwrap().parse().unwrap(),
        }
    }

    /// `agentwire`, or `prefix` followed by `agentwire`.
    pub fn command(prefix: &[String]) -> Command {
        match prefix.split_first() {
            None => Command::new(agentwire_bin()),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(agentwire_bin());
                command
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most [`WAIT`].
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "relay did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.url.clone());
        config.backoff.initial = Duration::from_millis(50);
        config.backoff.max = Duration::from_millis(500);
        config
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a CLI run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(output: std::process::Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }
}

/// An agentwire home in a temp dir whose daemon is stopped when dropped.
pub struct TestHome {
    pub dir: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> TestHome {
        TestHome {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Runs `agentwire --home HOME ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    /// Runs `agentwire --home HOME ARGS` with stdout and stderr on a
    /// terminal (util-linux `script`); what the terminal showed is `stdout`.
    pub fn run_on_terminal(&self, args: &[&str]) -> Run {
        let mut command = vec![agentwire_bin().display().to_string(), "--home".into()];
        command.push(self.path().display().to_string());
        command.extend(args.iter().map(|a| (*a).to_owned()));
        let line = command
            .iter()
            .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let output = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("AGENTWIRE_AGENT")
            .stdin(Stdio::null())
            .output()
            .expect("util-linux `script` runs a command on a terminal");
        Run::from(output)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        use std::io::Write;
        let mut child = Command::new(agentwire_bin())
            .arg("--home")
            .arg(self.path())
            .args(args)
            .env_remove("AGENTWIRE_AGENT")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            // A command may stop reading early (a body over the limit):
            // then the rest cannot be written, which is not the test's
            // concern.
            match child.stdin.take().unwrap().write_all(input) {
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    panic!("cannot write the command's stdin: {error}")
                }
                _ => {}
            }
        }
        Run::from(child.wait_with_output().unwrap())
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let _ = self.run(&["daemon", "stop"]);
        // Give it a moment to release the socket before the dir goes.
        let deadline = std::time::Instant::now() + WAIT;
        while self.path().join("daemon.sock").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TCP proxy on loopback that forwards to `target` and records every byte
/// in both directions. Runs on its own thread; stops when dropped.
pub struct WireRecorder {
    pub addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl WireRecorder {
    pub fn start(target: SocketAddr) -> WireRecorder {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let seen = seen2.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        WireRecorder { addr, seen, stop }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for WireRecorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl TestHome {
    /// One request straight to the daemon's socket (the daemon must be
    /// running): for tests that need hundreds of operations quickly.
    pub fn api(&self, request: serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead, Write};
        let stream =
            std::os::unix::net::UnixStream::connect(self.path().join("daemon.sock")).unwrap();
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        (&stream).write_all(&line).unwrap();
        let mut answer = String::new();
        std::io::BufReader::new(&stream)
            .read_line(&mut answer)
            .unwrap();
        let response: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(response["ok"], true, "{request}: {response}");
        response["result"].clone()
    }
}

/// A relay process (started with `extra` flags) and two homes, alice and
/// bob, paired through it by an invite.
pub struct Paired {
    pub relay: RelayProcess,
    /// The relay's home (its database is `relay.db` in it).
    pub relay_home: PathBuf,
    pub alice: TestHome,
    pub bob: TestHome,
    _dir: tempfile::TempDir,
}

impl Paired {
    pub fn start(extra: &[&str]) -> Paired {
        let dir = tempfile::tempdir().unwrap();
        let relay_home = dir.path().join("home");
        let relay = RelayProcess::spawn(&relay_home, "127.0.0.1:0", extra);
        let (alice, bob) = (TestHome::new(), TestHome::new());
        alice
            .run(&["init", "--name", "alice", "--relay", &relay.url])
            .ok();
        bob.run(&["init", "--name", "bob", "--relay", &relay.url])
            .ok();
        let token = alice.run(&["invite"]).ok().stdout.trim().to_owned();
        bob.run(&["accept", &token]).ok();
        Paired {
            relay,
            relay_home,
            alice,
            bob,
            _dir: dir,
        }
    }

    /// Stops the relay (SIGTERM) and waits for it; `then` runs while it is
    /// down; it is started again on the same address.
    pub fn with_relay_stopped(&mut self, then: impl FnOnce(&std::path::Path)) {
        let addr = self.relay.addr.to_string();
        self.relay.signal("-TERM");
        self.relay.wait();
        then(&self.relay_home.join("relay.db"));
        self.relay = RelayProcess::spawn(&self.relay_home, &addr, &[]);
    }
}

/// Polls `done` every 50 ms for up to 10 s; whether it became true.
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A real Olm first message from a fresh identity that nobody invited: what a
/// stranger (or a hostile relay) can produce. Returns its id and payload.
pub fn stranger_message(body: &str) -> (agentwire_session::MessageId, Vec<u8>) {
    use agentwire_session::{Identity, Name};
    let mut target = Identity::generate(Name::new("target").unwrap());
    let one_time_key = target.new_one_time_key().unwrap();
    first_message(target.curve25519(), one_time_key, body)
}

/// A first Olm message (a pre-key message) from a fresh identity to the
/// holder of `curve25519` and its `one_time_key`, with a chat `body`.
pub fn first_message(
    curve25519: [u8; 32],
    one_time_key: [u8; 32],
    body: &str,
) -> (agentwire_session::MessageId, Vec<u8>) {
    use agentwire_session::{Identity, Kind, MessageId, Name, Plaintext, Priority};
    let stranger = Identity::generate(Name::new("stranger").unwrap());
    let mut session = stranger.open_session(curve25519, one_time_key).unwrap();
    let id = MessageId::new_v7();
    let payload = session
        .seal(&Plaintext {
            id,
            kind: Kind::Chat,
            priority: Priority::Normal,
            sent_at_ms: 0,
            reply_to: None,
            thread: None,
            chain: None,
            seq: None,
            body: body.as_bytes().to_vec(),
        })
        .unwrap();
    (id, payload)
}

/// The Python that has the test clients' packages (`mcp`, `jsonschema`):
/// `AGENTWIRE_TEST_PYTHON` if set, else the workspace's `.venv`, which the
/// first test that needs it creates (`python3 -m venv`, then the pinned
/// `tests/python/requirements.txt` from PyPI). Test processes that start at
/// once take turns on a lock file, so it is made once.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("AGENTWIRE_TEST_PYTHON") {
        return python.into();
    }
    static READY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READY.get_or_init(make_venv).clone()
}

fn make_venv() -> PathBuf {
    let venv = workspace().join(".venv");
    let python = venv.join("bin/python");
    let has_packages = || {
        Command::new(&python)
            .args(["-c", "import mcp, jsonschema"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if has_packages() {
        return python;
    }
    let target = workspace().join("target");
    std::fs::create_dir_all(&target).expect("cannot create target/");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join(".venv.lock"))
        .expect("cannot open target/.venv.lock");
    lock.lock().expect("cannot lock target/.venv.lock");
    // Another test process may have made it while this one waited.
    if has_packages() {
        return python;
    }
    let run = |program: &Path, args: &[&str]| {
        let output = Command::new(program)
            .args(args)
            .current_dir(workspace())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    if venv.exists() {
        // Left half-made by an interrupted run.
        std::fs::remove_dir_all(&venv).expect("cannot remove a half-made .venv");
    }
    let (made, stderr) = run(Path::new("python3"), &["-m", "venv", ".venv"]);
    assert!(
        made,
        "the MCP and schema tests need Python 3 with venv (Debian: apt install python3-venv): {stderr}"
    );
    let requirements = workspace().join("crates/agentwire/tests/python/requirements.txt");
    let requirements = requirements.to_str().expect("a UTF-8 path");
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(5));
        }
        let (installed, stderr) = run(
            &python,
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                requirements,
            ],
        );
        if installed && has_packages() {
            return python;
        }
        last = stderr;
    }
    panic!(
        "cannot install the test clients from PyPI into .venv ({requirements}): {last}\n\
         install them by hand or set AGENTWIRE_TEST_PYTHON to a Python that has them"
    );
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A script in `tests/python`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Checks `valid` and `invalid` values against the JSON Schema at `schema`
/// (relative to the workspace) with Python's `jsonschema`.
pub fn check_schema(schema: &str, valid: &[serde_json::Value], invalid: &[serde_json::Value]) {
    let cases = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cases.path(),
        serde_json::json!({"valid": valid, "invalid": invalid}).to_string(),
    )
    .unwrap();
    let output = Command::new(python())
        .arg(python_script("check_schema.py"))
        .arg(workspace().join(schema))
        .arg(cases.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{schema}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A small deterministic generator (xorshift), seeded from the clock; the seed
/// is printed so a failing run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock (never zero).
    pub fn from_clock() -> Rng {
        Rng(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One request to a home's daemon; `None` if the daemon is down or the
/// request failed (the caller decides whether to retry).
pub fn try_api(home: &TestHome, request: &serde_json::Value) -> Option<serde_json::Value> {
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(home.path().join("daemon.sock")).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut line = serde_json::to_vec(request).ok()?;
    line.push(b'\n');
    (&stream).write_all(&line).ok()?;
    let mut answer = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut answer)
        .ok()?;
    let response: serde_json::Value = serde_json::from_str(&answer).ok()?;
    (response["ok"] == true).then(|| response["result"].clone())
}

/// Takes unread messages the way a reader that must not lose any does:
/// `recv` with `confirm`, then `ack` with every id it got. Returns the
/// messages (id and body) and whether the daemon confirmed the ack; `None`
/// if the daemon is down or refused. A message whose ack was not confirmed
/// may come again (the daemon may have died before marking it read); one
/// that comes again after a confirmed ack is a duplicate.
pub fn try_recv_confirmed(home: &TestHome, wait_ms: u64) -> Option<(Vec<(String, String)>, bool)> {
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(home.path().join("daemon.sock")).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut reader = std::io::BufReader::new(&stream);
    let mut exchange = |request: serde_json::Value| -> Option<serde_json::Value> {
        let mut line = serde_json::to_vec(&request).ok()?;
        line.push(b'\n');
        (&stream).write_all(&line).ok()?;
        let mut answer = String::new();
        reader.read_line(&mut answer).ok()?;
        let response: serde_json::Value = serde_json::from_str(&answer).ok()?;
        (response["ok"] == true).then(|| response["result"].clone())
    };
    let got = exchange(serde_json::json!({
        "op": "recv", "max": 1000, "wait_ms": wait_ms, "confirm": true
    }))?;
    let messages: Vec<(String, String)> = got["messages"]
        .as_array()?
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_owned(),
                m["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let ids: Vec<&String> = messages.iter().map(|(id, _)| id).collect();
    let confirmed = exchange(serde_json::json!({"op": "ack", "ids": ids})).is_some();
    Some((messages, confirmed))
}

pub fn daemon_pid(home: &TestHome) -> Option<u32> {
    try_api(home, &serde_json::json!({"op": "status"}))?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

pub fn kill_9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// After a run that sent messages from `alice` to `bob` through faults:
/// waits (within `budget` of `started`) until every message whose send
/// returned (`sent`: body to id) is in `bob`'s store, then checks that each
/// is there exactly once and that `alice` sees each delivered. Prints one
/// counts line starting with `label`.
#[allow(clippy::too_many_arguments)]
pub fn check_every_sent_message_arrives_once(
    label: &str,
    alice: &TestHome,
    bob: &TestHome,
    sent: &std::collections::HashMap<String, String>,
    attempts: usize,
    kills: usize,
    started: std::time::Instant,
    budget: Duration,
) {
    use serde_json::json;
    use std::collections::{HashMap, HashSet};
    // Message ids as the receiver's store hands them out: a second copy of a
    // message would show up as its id twice.
    let mut received: Vec<String> = Vec::new();
    // Ids handed out in a take whose ack was not confirmed: they may come
    // again without being duplicates.
    let mut unconfirmed_takes: HashSet<String> = HashSet::new();
    let expected: HashSet<&String> = sent.values().collect();
    while started.elapsed() < budget {
        // Taken with confirm (a daemon killed between marking messages read
        // and answering would otherwise lose them to this reader); a copy
        // handed out again after an unconfirmed take is not a duplicate.
        if let Some((messages, confirmed)) = try_recv_confirmed(bob, 1000) {
            for (id, _) in messages {
                if confirmed {
                    received.push(id);
                } else {
                    unconfirmed_takes.insert(id);
                }
            }
        } else {
            bob.run(&["daemon", "start"]);
        }
        let have: HashSet<&String> = received.iter().chain(&unconfirmed_takes).collect();
        if expected.iter().all(|id| have.contains(*id)) {
            break;
        }
    }
    // Let any stragglers (duplicates, if there were any) arrive too.
    std::thread::sleep(Duration::from_secs(1));
    if let Some((messages, _)) = try_recv_confirmed(bob, 0) {
        received.extend(messages.into_iter().map(|(id, _)| id));
    }

    let duplicates = received.len() - received.iter().collect::<HashSet<_>>().len();
    let unique: HashSet<&String> = received.iter().chain(&unconfirmed_takes).collect();
    let lost: Vec<&&String> = expected
        .iter()
        .filter(|id| !unique.contains(**id))
        .collect();
    // Sends that did not return (the daemon died mid-request) may or may not
    // arrive; they are counted apart.
    let unconfirmed = unique.iter().filter(|id| !expected.contains(**id)).count();

    // The sender's view: every confirmed message ends delivered (or read).
    let mut not_delivered = sent.len();
    while started.elapsed() < budget {
        if let Some(list) = try_api(alice, &json!({"op": "sent", "max": 100000})) {
            let states: HashMap<String, String> = list["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["id"].as_str().unwrap().to_owned(),
                        m["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            not_delivered = sent
                .values()
                .filter(|id| {
                    !matches!(
                        states.get(*id).map(String::as_str),
                        Some("delivered" | "read")
                    )
                })
                .count();
            if not_delivered == 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    println!(
        "{label}: sent {} (in {attempts} attempts), received {} unique ({} from unconfirmed sends), duplicates {duplicates}, lost {}, not delivered per sender {not_delivered}, kills {kills}, {:.1} s",
        sent.len(),
        unique.len(),
        unconfirmed,
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        lost.is_empty(),
        "lost {} messages, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(duplicates, 0, "duplicates in the receiver's store");
    assert_eq!(
        not_delivered, 0,
        "the sender does not see every message delivered"
    );
}

/// Sends `body` from `home` to `to` until a `send` returns, restarting the
/// daemon when it is down or dies mid-request (the message of a send that
/// did not return may or may not be stored, and is not counted). Returns
/// the id; counts every try in `attempts`.
pub fn send_counted(
    home: &TestHome,
    to: &str,
    body: &str,
    attempts: &std::sync::atomic::AtomicUsize,
    started: std::time::Instant,
    budget: Duration,
) -> String {
    loop {
        assert!(started.elapsed() < budget, "sending did not finish in time");
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = serde_json::json!({"op": "send", "to": to, "body": body});
        match try_api(home, &request) {
            Some(result) => return result["id"].as_str().unwrap().to_owned(),
            None => {
                home.run(&["daemon", "start"]);
            }
        }
    }
}
