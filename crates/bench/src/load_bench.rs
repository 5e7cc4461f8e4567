//! Load under attack: a relay process over `wss://` with its default limits
//! serves 1,000 authenticated clients exchanging messages, first alone, then
//! while four kinds of attacker run:
//! 1. sockets that finish TLS but never finish their HTTP request;
//! 2. sockets that never start TLS (silent handshakes);
//! 3. fresh keys filling the legitimate clients' queues as fast as the
//!    relay lets them;
//! 4. clients sending far past the rate limits (reconnecting when closed).
//!
//! Prints, for each phase, the legitimate clients' messages (sent, received,
//! lost) and latency percentiles, how `/health` answered, and the relay's
//! memory; then what the attackers got. Bounded in time; asserts nothing.
//!
//! ```text
//! cargo build --release -p agentwire -p agentwire-bench
//! target/release/load-bench --clients 1000 --seconds 15
//! ```
//!
//! The legitimate clients connect from 16 addresses 127.0.1.x, the
//! attackers from addresses of their own in 127.0.2-5.x: loopback stands in
//! for the many hosts of real clients.

#[path = "exe.rs"]
mod exe;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_client::{ClientConfig, Event, RelayClient, Signer};
use agentwire_wire::{EnvelopeId, PublicKey};
use clap::Parser;
use ed25519_dalek::SigningKey;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Relay load benchmark with attackers.
#[derive(Debug, Parser)]
struct Args {
    /// The agentwire binary (default: next to this one)
    #[arg(long, value_name = "PATH")]
    exe: Option<PathBuf>,
    /// Legitimate clients, in pairs that message each other
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Length of each phase (alone, then under attack), in seconds
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Messages per second each legitimate client sends
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Attacker sockets that never finish their HTTP request (class 1)
    #[arg(long, default_value_t = 1000)]
    slow_http: usize,
    /// Attacker sockets that never start TLS (class 2)
    #[arg(long, default_value_t = 1000)]
    silent_tls: usize,
    /// Attacker keys filling the legitimate clients' queues (class 3)
    #[arg(long, default_value_t = 8)]
    queue_fillers: usize,
    /// Attacker clients sending past the rate limits (class 4)
    #[arg(long, default_value_t = 8)]
    flooders: usize,
    /// A tiny run that only checks the benchmark works (used by CI)
    #[arg(long)]
    smoke: bool,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

/// The phases: connecting, alone, under attack, done.
const WARMUP: u8 = 0;
const ALONE: u8 = 1;
const ATTACKED: u8 = 2;
const DONE: u8 = 3;

/// The first bytes of a legitimate client's message.
const MAGIC: &[u8; 8] = b"legit-lb";

fn main() -> Result<(), Error> {
    let mut args = Args::parse();
    if args.smoke {
        args.clients = 20;
        args.seconds = 2;
        args.slow_http = 20;
        args.silent_tls = 20;
        args.queue_fillers = 2;
        args.flooders = 2;
    }
    let exe = exe::agentwire_exe(args.exe.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, exe))
}

/// The relay process, killed when the benchmark ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What happened in one phase, for the legitimate clients.
#[derive(Default)]
struct Phase {
    sent: AtomicU64,
    send_errors: AtomicU64,
    received: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    health_ok: AtomicU64,
    health_failed: AtomicU64,
    health_latencies: Mutex<Vec<Duration>>,
    rss_peak_kb: AtomicU64,
}

/// What the attackers got.
#[derive(Default)]
struct Attack {
    slow_http_opened: AtomicU64,
    slow_http_closed: AtomicU64,
    silent_opened: AtomicU64,
    silent_closed: AtomicU64,
    fill_accepted: AtomicU64,
    fill_refused: AtomicU64,
    flood_accepted: AtomicU64,
    flood_refused: AtomicU64,
    flood_connections: AtomicU64,
}

struct Shared {
    phase: AtomicU8,
    phases: [Phase; 3],
    attack: Attack,
    started: Instant,
}

impl Shared {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<&Phase> {
        match self.phase() {
            ALONE => Some(&self.phases[1]),
            ATTACKED => Some(&self.phases[2]),
            _ => None,
        }
    }
}

fn key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap_or_default();
    SigningKey::from_bytes(&seed)
}

fn random_id() -> EnvelopeId {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).unwrap_or_default();
    EnvelopeId::from_bytes(id)
}

fn loopback(third: u8, fourth: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, third, (1 + fourth % 250) as u8))
}

async fn run(args: Args, exe: PathBuf) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
    let mut relay = KillOnDrop(
        Command::new(&exe)
            .arg("--home")
            .arg(dir.path().join("relay"))
            .args(["relay", "--listen", "127.0.0.1:0", "--json", "--tls-cert"])
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let listening = exe::startup_line(&mut relay.0).await?;
    let addr: SocketAddr = listening["addr"]
        .as_str()
        .ok_or("the relay did not print its address")?
        .parse()?;
    let url = format!("wss://localhost:{}", addr.port());
    let der = cert.cert.der().to_vec();
    let tls = tls_connector(&der)?;

    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        phases: Default::default(),
        attack: Attack::default(),
        started: Instant::now(),
    });

    // The legitimate clients, connected a few dozen at a time.
    let connect_started = Instant::now();
    let keys: Vec<SigningKey> = (0..args.clients.max(2)).map(|_| key()).collect();
    let addresses: Vec<PublicKey> = keys.iter().map(Signer::public_key).collect();
    let mut connecting =
        futures_util::stream::iter(keys.into_iter().enumerate().map(|(i, signing)| {
            let mut config = ClientConfig::new(url.clone());
            config.extra_roots = vec![der.clone()];
            config.local_address = Some(loopback(1, i % 16));
            async move { RelayClient::connect(config, Arc::new(signing)).await }
        }))
        .buffer_unordered(32);
    let mut clients = Vec::new();
    while let Some(connected) = connecting.next().await {
        clients.push(connected?);
    }
    let connect_time = connect_started.elapsed();
    // Pair them up by address: i talks to i ^ 1.
    let mut by_key: Vec<(PublicKey, RelayClient, agentwire_client::Events)> = clients
        .into_iter()
        .map(|(client, events)| (client.public_key(), client, events))
        .collect();
    by_key.sort_by_key(|(key, ..)| addresses.iter().position(|a| a == key));
    let mut tasks = Vec::new();
    for (i, (_, client, events)) in by_key.into_iter().enumerate() {
        let peer = addresses[(i ^ 1).min(addresses.len() - 1)];
        tasks.push(tokio::spawn(receive(
            client.clone(),
            events,
            shared.clone(),
        )));
        let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
        let offset = interval.mul_f64(i as f64 / args.clients.max(1) as f64);
        tasks.push(tokio::spawn(send(
            client,
            peer,
            interval,
            offset,
            shared.clone(),
        )));
    }
    let rss_before = rss_kb(relay.0.id());
    tasks.push(tokio::spawn(probe_health(
        addr,
        tls.clone(),
        shared.clone(),
    )));
    tasks.push(tokio::spawn(sample_memory(relay.0.id(), shared.clone())));

    let phase = Duration::from_secs(args.seconds);
    shared.phase.store(ALONE, Ordering::Relaxed);
    tokio::time::sleep(phase).await;

    // Under attack.
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for n in 0..args.slow_http {
        attackers.push(tokio::spawn(slow_http(
            addr,
            loopback(2, n % 8),
            tls.clone(),
            shared.clone(),
            stop.clone(),
        )));
    }
    for n in 0..args.silent_tls {
        attackers.push(tokio::spawn(silent_tls(
            addr,
            loopback(3, n % 8),
            shared.clone(),
            stop.clone(),
        )));
    }
    // A client of the relay connecting from 127.0.THIRD.x.
    let client_from = |third: u8, n: usize| {
        let mut config = ClientConfig::new(url.clone());
        config.extra_roots = vec![der.clone()];
        config.local_address = Some(loopback(third, n));
        config
    };
    for n in 0..args.queue_fillers {
        attackers.push(tokio::spawn(fill_queues(
            client_from(4, n),
            addresses.clone(),
            shared.clone(),
            stop.clone(),
        )));
    }
    for n in 0..args.flooders {
        attackers.push(tokio::spawn(flood(
            client_from(5, n),
            shared.clone(),
            stop.clone(),
        )));
    }
    shared.phase.store(ATTACKED, Ordering::Relaxed);
    tokio::time::sleep(phase).await;
    shared.phase.store(DONE, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    // Messages still on their way get a moment to arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for task in attackers.into_iter().chain(tasks) {
        task.abort();
    }
    let rss_after = rss_kb(relay.0.id());
    drop(relay);

    report(&args, &shared, connect_time, rss_before, rss_after);
    Ok(())
}

/// Sends one message every `interval` while a phase runs, tagged with the
/// phase and the time it was sent.
async fn send(
    client: RelayClient,
    peer: PublicKey,
    interval: Duration,
    offset: Duration,
    shared: Arc<Shared>,
) {
    tokio::time::sleep(offset).await;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let phase = shared.phase();
        if phase == DONE {
            return;
        }
        let Some(counts) = shared.current() else {
            continue;
        };
        let mut payload = Vec::with_capacity(256);
        payload.extend_from_slice(MAGIC);
        payload.push(phase);
        let at = shared.started.elapsed().as_nanos() as u64;
        payload.extend_from_slice(&at.to_be_bytes());
        payload.resize(256, 0x5a);
        match client.send(peer, random_id(), payload).await {
            Ok(()) => counts.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.send_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Takes what arrives, acknowledging each burst in one frame, and records
/// the latency of the legitimate messages (the attackers' are acknowledged
/// too, as a real client would).
async fn receive(client: RelayClient, mut events: agentwire_client::Events, shared: Arc<Shared>) {
    while let Some(event) = events.recv().await {
        let Event::Envelope(first) = event else {
            continue;
        };
        let now = shared.started.elapsed();
        let mut burst = vec![first];
        while let Some(Event::Envelope(next)) = events.try_recv() {
            burst.push(next);
        }
        let ids: Vec<EnvelopeId> = burst.iter().map(|e| e.id).collect();
        for envelope in burst {
            let payload = &envelope.payload;
            if payload.len() < 17 || &payload[..8] != MAGIC {
                continue;
            }
            let phase = payload[8] as usize;
            let mut at = [0u8; 8];
            at.copy_from_slice(&payload[9..17]);
            let sent = Duration::from_nanos(u64::from_be_bytes(at));
            if let Some(counts) = shared.phases.get(phase) {
                counts.received.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut latencies) = counts.latencies.lock() {
                    latencies.push(now.saturating_sub(sent));
                }
            }
        }
        let client = client.clone();
        tokio::spawn(async move { client.ack_batch(&ids).await });
    }
}

/// `GET /health` over TLS from loopback every 100 ms, 2 s to answer.
async fn probe_health(addr: SocketAddr, tls: tokio_rustls::TlsConnector, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(counts) = shared.current() else {
            continue;
        };
        let started = Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(2), health(addr, &tls)).await;
        match answered {
            Ok(Ok(true)) => {
                counts.health_ok.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut latencies) = counts.health_latencies.lock() {
                    latencies.push(started.elapsed());
                }
            }
            _ => {
                counts.health_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn health(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> Result<bool, Error> {
    let mut stream = tls_from(addr, IpAddr::V4(Ipv4Addr::LOCALHOST), tls).await?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok();
    Ok(answer.starts_with(b"HTTP/1.1 200"))
}

/// The relay's resident memory, from `/proc`.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

async fn sample_memory(pid: u32, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(counts) = shared.current() {
            counts.rss_peak_kb.fetch_max(rss_kb(pid), Ordering::Relaxed);
        }
    }
}

/// A TCP connection to `addr` from `local`.
async fn tcp_from(addr: SocketAddr, local: IpAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

/// A TLS connection to the relay (as `localhost`) from `local`.
async fn tls_from(
    addr: SocketAddr,
    local: IpAddr,
    tls: &tokio_rustls::TlsConnector,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Error> {
    let tcp = tcp_from(addr, local).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(tls.connect(name, tcp).await?)
}

/// Opens a socket with `open`, holds it until the relay closes it, then
/// opens another, until `stop`; counts both.
async fn hold_open<S, Fut>(
    mut open: impl FnMut() -> Fut,
    opened: &AtomicU64,
    closed: &AtomicU64,
    stop: &AtomicBool,
) where
    S: tokio::io::AsyncRead + Unpin,
    Fut: std::future::Future<Output = Result<S, Error>>,
{
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = open().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let mut byte = [0u8; 1];
        let _ = stream.read(&mut byte).await;
        closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Class 1: finish TLS, start an HTTP request, never finish it; when the
/// relay closes the socket, open another.
async fn slow_http(
    addr: SocketAddr,
    local: IpAddr,
    tls: tokio_rustls::TlsConnector,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let open = || async {
        let mut stream = tls_from(addr, local, &tls).await?;
        stream
            .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await?;
        Ok(stream)
    };
    let attack = &shared.attack;
    hold_open(
        open,
        &attack.slow_http_opened,
        &attack.slow_http_closed,
        &stop,
    )
    .await;
}

/// Class 2: open TCP, never start TLS; when closed, open another.
async fn silent_tls(addr: SocketAddr, local: IpAddr, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let open = || async { Ok(tcp_from(addr, local).await?) };
    let attack = &shared.attack;
    hold_open(open, &attack.silent_opened, &attack.silent_closed, &stop).await;
}

/// Class 3: a fresh key sending junk to the legitimate clients as fast as
/// the relay accepts it, 32 sends in flight.
async fn fill_queues(
    config: ClientConfig,
    targets: Vec<PublicKey>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let Ok((client, _events)) = RelayClient::connect(config, Arc::new(key())).await else {
        return;
    };
    let attack = &shared.attack;
    let mut in_flight = FuturesUnordered::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        while in_flight.len() < 32 {
            n += 1;
            let to = targets[n % targets.len()];
            let client = client.clone();
            in_flight.push(async move { client.send(to, random_id(), vec![0xee; 1024]).await });
        }
        if let Some(Ok(())) = in_flight.next().await {
            attack.fill_accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            attack.fill_refused.fetch_add(1, Ordering::Relaxed);
            // Refused ones are retried at once, less a moment: the attacker
            // shares this process's cores with the legitimate clients.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Class 4: a client with 1,000 sends in flight, far past the key rate;
/// when the relay closes it, a new key connects.
async fn flood(config: ClientConfig, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let attack = &shared.attack;
    let target = key().public_key();
    while !stop.load(Ordering::Relaxed) {
        let mut config = config.clone();
        config.request_timeout = Duration::from_secs(2);
        let Ok((client, _events)) = RelayClient::connect(config, Arc::new(key())).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        attack.flood_connections.fetch_add(1, Ordering::Relaxed);
        let mut in_flight = FuturesUnordered::new();
        for _ in 0..1000 {
            let client = client.clone();
            in_flight.push(async move { client.send(target, random_id(), vec![0xff; 64]).await });
        }
        while let Some(result) = in_flight.next().await {
            match result {
                Ok(()) => attack.flood_accepted.fetch_add(1, Ordering::Relaxed),
                Err(_) => attack.flood_refused.fetch_add(1, Ordering::Relaxed),
            };
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
}

fn tls_connector(der: &[u8]) -> Result<tokio_rustls::TlsConnector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(der.to_vec()))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// One phase's figures, as JSON.
fn summary(phase: &Phase) -> serde_json::Value {
    let mut latencies = phase
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort();
    let mut health = phase
        .health_latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    health.sort();
    let sent = phase.sent.load(Ordering::Relaxed);
    let received = phase.received.load(Ordering::Relaxed);
    serde_json::json!({
        "sent": sent,
        "send_errors": phase.send_errors.load(Ordering::Relaxed),
        "received": received,
        "lost": sent.saturating_sub(received),
        "latency_ms": {
            "p50": pct(&latencies, 50.0),
            "p99": pct(&latencies, 99.0),
            "max": pct(&latencies, 100.0),
        },
        "health": {
            "answered": phase.health_ok.load(Ordering::Relaxed),
            "failed": phase.health_failed.load(Ordering::Relaxed),
            "p99_ms": pct(&health, 99.0),
            "max_ms": pct(&health, 100.0),
        },
        "relay_rss_peak_mb": phase.rss_peak_kb.load(Ordering::Relaxed) as f64 / 1024.0,
    })
}

fn report(args: &Args, shared: &Shared, connect: Duration, rss_before: u64, rss_after: u64) {
    let alone = summary(&shared.phases[1]);
    let attacked = summary(&shared.phases[2]);
    let a = &shared.attack;
    let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let attack = serde_json::json!({
        "slow_http": {"sockets": args.slow_http, "opened": get(&a.slow_http_opened), "closed_by_relay": get(&a.slow_http_closed)},
        "silent_tls": {"sockets": args.silent_tls, "opened": get(&a.silent_opened), "closed_by_relay": get(&a.silent_closed)},
        "queue_fill": {"keys": args.queue_fillers, "accepted": get(&a.fill_accepted), "refused": get(&a.fill_refused)},
        "flood": {"clients": args.flooders, "connections": get(&a.flood_connections), "accepted": get(&a.flood_accepted), "refused": get(&a.flood_refused)},
    });
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "clients": args.clients, "seconds_per_phase": args.seconds, "rate_per_client": args.rate,
                "connect_seconds": connect.as_secs_f64(),
                "relay_rss_connected_mb": rss_before as f64 / 1024.0,
                "relay_rss_after_mb": rss_after as f64 / 1024.0,
                "alone": alone, "attacked": attacked, "attack": attack,
            })
        );
        return;
    }
    println!(
        "load-bench: {} clients over wss:// ({} msg/s each), {} s alone then {} s under attack; connected in {:.1} s, relay at {:.0} MB",
        args.clients,
        args.rate,
        args.seconds,
        args.seconds,
        connect.as_secs_f64(),
        rss_before as f64 / 1024.0
    );
    println!("                          alone          under attack");
    let row = |label: &str, path: &[&str]| {
        let pick = |v: &serde_json::Value| {
            let mut v = v;
            for key in path {
                v = &v[*key];
            }
            match v.as_f64() {
                Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
                Some(x) => format!("{x:.2}"),
                None => "-".into(),
            }
        };
        println!(
            "  {label:<22} {:>12}   {:>12}",
            pick(&alone),
            pick(&attacked)
        );
    };
    row("messages sent", &["sent"]);
    row("send errors", &["send_errors"]);
    row("received", &["received"]);
    row("lost", &["lost"]);
    row("latency p50 ms", &["latency_ms", "p50"]);
    row("latency p99 ms", &["latency_ms", "p99"]);
    row("latency max ms", &["latency_ms", "max"]);
    row("/health answered", &["health", "answered"]);
    row("/health failed", &["health", "failed"]);
    row("/health p99 ms", &["health", "p99_ms"]);
    row("relay RSS peak MB", &["relay_rss_peak_mb"]);
    println!(
        "  attackers: slow HTTP {} sockets, {} opened, {} closed by the relay; silent TLS {} sockets, {} opened, {} closed",
        args.slow_http,
        get(&a.slow_http_opened),
        get(&a.slow_http_closed),
        args.silent_tls,
        get(&a.silent_opened),
        get(&a.silent_closed)
    );
    println!(
        "             queue filling {} keys: {} accepted, {} refused; flooding {} clients: {} connections, {} accepted, {} refused",
        args.queue_fillers,
        get(&a.fill_accepted),
        get(&a.fill_refused),
        args.flooders,
        get(&a.flood_connections),
        get(&a.flood_accepted),
        get(&a.flood_refused)
    );
}
