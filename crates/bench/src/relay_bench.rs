//! Relay benchmark: N senders send to M recipients through one relay (in
//! this process, or a relay process at `--relay-url`; real WebSocket
//! connections on loopback, durable accept in SQLite). Prints throughput and
//! latency percentiles; asserts nothing.
//!
//! ```text
//! cargo run --release -p agentwire-bench --bin relay-bench -- --senders 8 --recipients 4
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_client::{ClientConfig, Event, RelayClient, Signer};
use agentwire_relay::{Limits, RateLimit, Relay, RelayConfig};
use agentwire_wire::{EnvelopeId, PublicKey};
use clap::Parser;
use ed25519_dalek::SigningKey;
use futures_util::stream::{FuturesUnordered, StreamExt};

/// Relay throughput and latency benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Sending clients
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Receiving clients (each sender spreads its messages over all of them)
    #[arg(long, default_value_t = 4)]
    recipients: usize,
    /// Messages in total
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Payload bytes per message
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Sends in flight per sender
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Send everything while the recipients are offline, then connect them
    /// and drain: measures accept and drain throughput separately
    #[arg(long)]
    offline: bool,
    /// Use the relay at this URL (e.g. an `agentwire relay` process, with its
    /// rate and queue limits raised) instead of one in this process; several
    /// comma-separated URLs are a cluster's nodes, used as with --nodes
    #[arg(long, value_name = "URL[,URL..]")]
    relay_url: Option<String>,
    /// Run the relay as this many `agentwire relay` processes (nodes of one
    /// cluster when more than one; needs --postgres). Senders connect to
    /// node i mod N and recipients to node (i+1) mod N, so with two nodes
    /// every message crosses from one node to the other
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    nodes: Option<u16>,
    /// Store in a PostgreSQL server this program starts (durable: fsync on,
    /// as SQLite's synchronous=FULL) instead of SQLite; relay processes are
    /// started (one, unless --nodes says more)
    #[arg(long)]
    postgres: bool,
    /// The agentwire binary for relay processes [default: the one next to
    /// this program]
    #[arg(long, value_name = "PATH")]
    exe: Option<std::path::PathBuf>,
    /// A tiny run that only checks the benchmark works (used by CI)
    #[arg(long)]
    smoke: bool,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

mod exe;
#[allow(dead_code)]
mod pg;

/// When each message was sent and accepted, by id.
type Sent = Arc<Mutex<HashMap<EnvelopeId, (Instant, Option<Instant>)>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = Args::parse();
    if args.smoke {
        args.senders = 2;
        args.recipients = 2;
        args.messages = 200;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

fn key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap_or_default();
    SigningKey::from_bytes(&seed)
}

fn envelope_id(sender: usize, n: usize) -> EnvelopeId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(sender as u64).to_be_bytes());
    id[8..].copy_from_slice(&(n as u64).to_be_bytes());
    EnvelopeId::from_bytes(id)
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = RelayConfig::new("127.0.0.1:0".parse()?, dir.path().join("bench.db"));
    config.limits = Limits {
        key_rate: RateLimit::per_second(1_000_000),
        ip_rate: RateLimit::per_second(1_000_000),
        max_queue_per_recipient: u32::try_from(args.messages)?.max(1),
        max_queue_per_sender: u32::try_from(args.messages)?.max(1),
        ..Limits::default()
    };
    let nodes = usize::from(args.nodes.unwrap_or(1));
    if nodes > 1 && !args.postgres {
        return Err(
            "--nodes above 1 needs --postgres: the nodes of a cluster share PostgreSQL".into(),
        );
    }
    let processes = args.nodes.is_some() || args.postgres;
    // Dropped last: the relay processes stop before their database.
    let postgres = if args.postgres {
        Some(tokio::task::spawn_blocking(|| pg::PgServer::start(true)).await??)
    } else {
        None
    };
    let mut children = Nodes(Vec::new());
    let relay = match &args.relay_url {
        Some(_) => None,
        None if processes => None,
        None => Some(Relay::spawn(config).await?),
    };
    let urls: Vec<String> = match (&args.relay_url, &relay) {
        (Some(url), _) => url.split(',').map(str::to_owned).collect(),
        (None, Some(relay)) => vec![relay.url()],
        (None, None) => {
            // A fresh database; creating it blocks for a moment, before
            // anything is measured.
            let db = postgres
                .as_ref()
                .map(pg::PgServer::create_database)
                .transpose()?;
            let exe = exe::agentwire_exe(args.exe.as_ref()).map_err(|e| e.to_string())?;
            let mut urls = Vec::new();
            for _ in 0..nodes {
                let (child, url) =
                    spawn_node(&exe, dir.path(), db.as_deref(), args.messages).await?;
                children.0.push(child);
                urls.push(url);
            }
            urls
        }
    };
    let node_url = |i: usize| urls[i % urls.len()].clone();

    let sent: Sent = Arc::new(Mutex::new(HashMap::with_capacity(args.messages)));
    let start = Instant::now();

    let recipient_keys: Vec<SigningKey> = (0..args.recipients.max(1)).map(|_| key()).collect();
    let recipient_addrs: Vec<PublicKey> = recipient_keys.iter().map(Signer::public_key).collect();
    let per_recipient = split(args.messages, args.senders, args.recipients);
    let client_config = |i: usize| ClientConfig::new(node_url(i));
    let connect_recipients = |keys: Vec<SigningKey>| {
        let per_recipient = per_recipient.clone();
        async move {
            let mut receivers = Vec::new();
            for (i, (signing, expected)) in keys.into_iter().zip(per_recipient).enumerate() {
                let (client, events) =
                    RelayClient::connect(client_config(i + 1), Arc::new(signing)).await?;
                receivers.push(tokio::spawn(receive(client, events, expected)));
            }
            Ok::<_, agentwire_client::ClientError>(receivers)
        }
    };
    let mut receivers = if args.offline {
        Vec::new()
    } else {
        connect_recipients(recipient_keys.clone()).await?
    };

    let mut senders = Vec::new();
    let per_sender = args.messages / args.senders.max(1);
    for sender in 0..args.senders {
        let (client, _events) =
            RelayClient::connect(client_config(sender), Arc::new(key())).await?;
        let keys = recipient_addrs.clone();
        let sent = sent.clone();
        let (payload, window) = (args.payload, args.window);
        senders.push(tokio::spawn(async move {
            let mut in_flight = FuturesUnordered::new();
            for n in 0..per_sender {
                let id = envelope_id(sender, n);
                let to = keys[n % keys.len()];
                let client = client.clone();
                let sent = sent.clone();
                in_flight.push(async move {
                    let t0 = Instant::now();
                    if let Ok(mut sent) = sent.lock() {
                        sent.insert(id, (t0, None));
                    }
                    let result = client.send(to, id, vec![0xab; payload]).await;
                    let accepted = Instant::now();
                    if let Ok(mut sent) = sent.lock()
                        && let Some(entry) = sent.get_mut(&id)
                    {
                        entry.1 = Some(accepted);
                    }
                    result
                });
                if in_flight.len() >= window
                    && let Some(result) = in_flight.next().await
                {
                    result?;
                }
            }
            while let Some(result) = in_flight.next().await {
                result?;
            }
            Ok::<_, agentwire_client::ClientError>(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let send_done = start.elapsed();
    let drain_start = Instant::now();
    if args.offline {
        receivers = connect_recipients(recipient_keys).await?;
    }
    let mut receive_latencies = Vec::new();
    for receiver in receivers {
        receive_latencies.extend(receiver.await??);
    }
    let elapsed = start.elapsed();
    let drain = drain_start.elapsed();

    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let mut accept: Vec<Duration> = sent
        .values()
        .filter_map(|(t0, accepted)| accepted.map(|a| a - *t0))
        .collect();
    let mut to_receive: Vec<Duration> = Vec::new();
    let mut accept_to_receive: Vec<Duration> = Vec::new();
    for (id, received) in receive_latencies {
        if let Some((t0, accepted)) = sent.get(&id) {
            to_receive.push(received.saturating_duration_since(*t0));
            if let Some(accepted) = accepted {
                accept_to_receive.push(received.saturating_duration_since(*accepted));
            }
        }
    }
    let total = to_receive.len();
    let rate = total as f64 / elapsed.as_secs_f64();
    let stats = |v: &mut Vec<Duration>| -> (f64, f64, f64) {
        v.sort();
        (pct(v, 50.0), pct(v, 99.0), pct(v, 100.0))
    };
    let (a50, a99, amax) = stats(&mut accept);
    let (r50, r99, rmax) = stats(&mut to_receive);
    let (x50, x99, xmax) = stats(&mut accept_to_receive);
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    drop(children);
    drop(postgres);
    let store = match (args.postgres, processes) {
        (true, _) => format!(
            "postgres, {nodes} node{}",
            if nodes == 1 { "" } else { "s" }
        ),
        (false, true) => "sqlite, relay process".to_owned(),
        (false, false) => "sqlite, in process".to_owned(),
    };

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "senders": args.senders, "recipients": args.recipients,
                "messages": total, "payload_bytes": args.payload, "window": args.window,
                "seconds": elapsed.as_secs_f64(), "send_seconds": send_done.as_secs_f64(),
                "msgs_per_sec": rate,
                "offline": args.offline,
                "store": store,
                "accept_msgs_per_sec": total as f64 / send_done.as_secs_f64(),
                "drain_msgs_per_sec": total as f64 / drain.as_secs_f64(),
                "send_to_accepted_ms": {"p50": a50, "p99": a99, "max": amax},
                "send_to_received_ms": {"p50": r50, "p99": r99, "max": rmax},
                "accepted_to_received_ms": {"p50": x50, "p99": x99, "max": xmax},
            })
        );
    } else {
        println!(
            "relay-bench: {} senders -> {} recipients, {} messages of {} bytes, window {} ({store})",
            args.senders, args.recipients, total, args.payload, args.window
        );
        println!(
            "  throughput           {rate:>10.0} msg/s ({:.2} s)",
            elapsed.as_secs_f64()
        );
        println!(
            "  accept phase         {:>10.0} msg/s   drain after it {:>8.0} msg/s{}",
            total as f64 / send_done.as_secs_f64(),
            total as f64 / drain.as_secs_f64(),
            if args.offline {
                " (recipients offline while sending)"
            } else {
                ""
            }
        );
        println!(
            "  send -> accepted     p50 {a50:>8.2} ms   p99 {a99:>8.2} ms   max {amax:>8.2} ms"
        );
        println!(
            "  send -> received     p50 {r50:>8.2} ms   p99 {r99:>8.2} ms   max {rmax:>8.2} ms"
        );
        println!(
            "  accepted -> received p50 {x50:>8.2} ms   p99 {x99:>8.2} ms   max {xmax:>8.2} ms"
        );
    }
    Ok(())
}

/// The relay processes of a run: stopped (SIGTERM, then waited for) when
/// dropped, also when the run fails half-way.
struct Nodes(Vec<std::process::Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Starts one `agentwire relay` process (on `db`, a PostgreSQL URL, or a
/// SQLite file in `dir`) with limits that do not throttle the benchmark;
/// returns it and its URL.
async fn spawn_node(
    exe: &std::path::Path,
    dir: &std::path::Path,
    db: Option<&str>,
    messages: usize,
) -> Result<(std::process::Child, String), Box<dyn std::error::Error>> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let home = dir.join(format!("node-{n}"));
    let queue = messages.max(1).to_string();
    let mut command = std::process::Command::new(exe);
    command
        .arg("--home")
        .arg(&home)
        .args(["relay", "--listen", "127.0.0.1:0", "--json"])
        .args(["--key-rate", "1000000", "--ip-rate", "1000000"])
        .args(["--max-queue", &queue, "--max-queue-per-sender", &queue])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if let Some(db) = db {
        command.args(["--db", db]);
    }
    let mut child = command.spawn()?;
    let listening = exe::startup_line(&mut child)
        .await
        .map_err(|e| e.to_string())?;
    let url = listening["url"]
        .as_str()
        .ok_or("no url in the relay's startup line")?;
    Ok((child, url.to_owned()))
}

/// How many messages each recipient gets when every sender sends
/// `messages / senders` round-robin over the recipients.
fn split(messages: usize, senders: usize, recipients: usize) -> Vec<usize> {
    let per_sender = messages / senders.max(1);
    let recipients = recipients.max(1);
    let mut counts = vec![0; recipients];
    for n in 0..per_sender {
        counts[n % recipients] += senders;
    }
    counts
}

/// Receives `expected` envelopes, acknowledging each burst (the envelopes
/// already waiting together) with one `ack_batch`, as the daemon does;
/// returns when each arrived.
async fn receive(
    client: RelayClient,
    mut events: agentwire_client::Events,
    expected: usize,
) -> Result<Vec<(EnvelopeId, Instant)>, agentwire_client::ClientError> {
    let mut received = Vec::with_capacity(expected);
    let mut acks = FuturesUnordered::new();
    while received.len() < expected {
        tokio::select! {
            Some(result) = acks.next(), if !acks.is_empty() => { let () = result?; }
            event = events.recv() => match event {
                Some(Event::Envelope(envelope)) => {
                    let now = Instant::now();
                    received.push((envelope.id, now));
                    let mut burst = vec![envelope.id];
                    while let Some(Event::Envelope(next)) = events.try_recv() {
                        received.push((next.id, now));
                        burst.push(next.id);
                    }
                    let client = client.clone();
                    acks.push(async move { client.ack_batch(&burst).await });
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    while let Some(result) = acks.next().await {
        result?;
    }
    Ok(received)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}
