//! End-to-end benchmark: messages from agents of one home to agents of
//! another, through two daemons and a relay, each its own process, driven
//! through the `agentwire` library as an agent would use it. Every message is
//! end-to-end encrypted and durably stored three times (sender's outbox, the
//! relay, the recipient's store). Prints throughput and latency; asserts
//! nothing.
//!
//! ```text
//! cargo build --release -p agentwire -p agentwire-bench
//! target/release/e2e-bench [--pairs 4] [--window 32] [--messages 10000] [--json]
//! ```
//!
//! Scenarios (all by default):
//! - `throughput`: N pairs; each sender keeps W sends in flight, each
//!   receiver takes with `recv`; messages per second from the first send to
//!   the last receipt, and send → received latency under that load;
//! - `latency`: one pair, one message at a time: send → the receiver's
//!   waiting `recv` returns it;
//! - `backlog`: the receiving daemon is stopped, K messages are sent and
//!   relayed, then the daemon starts: time until the agent has taken all;
//! - `call`: one pair, one at a time: a plain round trip (a message, the
//!   receiving agent answers it, the answer is taken) next to `call` to an
//!   `agentwire serve --on-message cat` (a task, serve runs `cat`, the
//!   result comes back): what a task through serve costs over a message;
//! - `relay`: the relay alone, as a process of its own: `relay-bench
//!   --relay-url` against it (8 senders, 4 recipients, 1 KiB payloads);
//! - `mcp`: the MCP door, measured by `crates/bench/mcp_bench.py` with the
//!   official MCP Python SDK as the client (run only when asked for: it
//!   needs the Python environment the tests set up in `.venv`);
//! - `fanout`: one agent sends to N others (each its contact), round robin;
//! - `growth`: throughput and latency under load at 1, 4, 16 and 64 pairs,
//!   each with 100 B, 4 KiB and 64 KiB bodies: where the cost bends;
//! - `cli`: one-shot `agentwire` commands against a warm daemon, as an
//!   agent that can only run commands uses it: `send`, `recv` of one waiting
//!   message, and `--version` (the process start alone), wall time each;
//! - `costs`: what bounds one message, measured alone in this process:
//!   sealing and opening with Olm (in one direction, and when the direction
//!   turns and the ratchet steps), saving a session's encrypted pickle, and
//!   the disk's fsync;
//! - `connections`: K idle authenticated connections held open on a relay
//!   process (1 000, 5 000 and 10 000 unless told): the relay's resident
//!   memory per connection.

#[path = "exe.rs"]
mod exe;
#[allow(dead_code)]
mod pg;

/// The PostgreSQL server of `--postgres`, started once, stopped at the end.
static POSTGRES: std::sync::Mutex<Option<pg::PgServer>> = std::sync::Mutex::new(None);

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentwire::Agent;
use clap::{Parser, ValueEnum};
use tokio::sync::Semaphore;

/// End-to-end throughput and latency through two daemons and a relay.
#[derive(Clone, Debug, Parser)]
struct Args {
    /// The agentwire binary [default: `agentwire` next to this program]
    #[arg(long)]
    exe: Option<PathBuf>,
    /// Which scenario to run
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Sender/receiver pairs (throughput)
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    /// Sends in flight per sender (throughput)
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Messages in all (throughput, backlog)
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Messages sent one at a time (latency)
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Body bytes per message
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Store the relay's queues in a PostgreSQL server this program starts
    /// (durable: fsync on), a fresh database for each scenario, instead of
    /// SQLite
    #[arg(long)]
    postgres: bool,
    /// A tiny run that only checks the benchmark works (used by CI)
    #[arg(long)]
    smoke: bool,
    /// Idle connections to hold, comma-separated (connections)
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    connections: Vec<usize>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Throughput,
    Latency,
    Backlog,
    Call,
    Relay,
    Mcp,
    Fanout,
    Growth,
    Cli,
    Costs,
    Connections,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args = Args::parse();
    if args.smoke {
        args.pairs = 2;
        args.window = 4;
        args.messages = 100;
        args.samples = 20;
        args.connections = vec![50];
    }
    let exe = exe::agentwire_exe(args.exe.as_ref())?;
    if args.postgres {
        let server = pg::PgServer::start(true)?;
        *POSTGRES.lock().map_err(|_| "poisoned")? = Some(server);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args, exe));
    // Every relay is gone by now; the database server goes last.
    drop(runtime);
    if let Ok(mut server) = POSTGRES.lock() {
        drop(server.take());
    }
    result
}

/// The relay and the two homes, as processes; stopped when dropped.
struct Setup {
    exe: PathBuf,
    dir: tempfile::TempDir,
    relay: std::process::Child,
    url: String,
}

impl Setup {
    async fn start(exe: &Path) -> Result<Setup, Error> {
        Self::start_with(exe, &[]).await
    }

    /// Starts the relay with `extra` flags.
    async fn start_with(exe: &Path, extra: &[&str]) -> Result<Setup, Error> {
        let dir = tempfile::tempdir()?;
        let url = match POSTGRES.lock().map_err(|_| "poisoned")?.as_ref() {
            Some(server) => Some(server.create_database()?),
            None => None,
        };
        let db = match url {
            Some(url) => std::ffi::OsString::from(url),
            None => dir.path().join("relay.db").into_os_string(),
        };
        // Generous limits: the benchmark measures the message path, not the
        // relay's abuse limits (which all loopback clients share, one IP).
        let mut relay = Command::new(exe)
            .args(["--home"])
            .arg(dir.path().join("relay-home"))
            .args(["relay", "--listen", "127.0.0.1:0", "--json"])
            .arg("--db")
            .arg(db)
            .args(["--key-rate", "1000000", "--ip-rate", "1000000"])
            .args([
                "--max-queue",
                "1000000",
                "--max-queue-per-sender",
                "1000000",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let listening = exe::startup_line(&mut relay).await?;
        let url = listening
            .get("url")
            .and_then(serde_json::Value::as_str)
            .ok_or("the relay did not print its url")?
            .to_owned();
        Ok(Setup {
            exe: exe.to_path_buf(),
            dir,
            relay,
            url,
        })
    }

    fn home(&self, side: &str) -> PathBuf {
        self.dir.path().join(side)
    }

    /// Runs one CLI command against a home; its stdout.
    fn cli(&self, side: &str, args: &[&str]) -> Result<String, Error> {
        let output = Command::new(&self.exe)
            .arg("--home")
            .arg(self.home(side))
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "agentwire {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// Envelopes the receiving daemon dropped (undecryptable or from
    /// strangers): any at all means messages were lost.
    fn dropped(&self) -> Result<u64, Error> {
        let status: serde_json::Value =
            serde_json::from_str(&self.cli("b", &["--json", "daemon", "status"])?)?;
        let count = |key: &str| {
            status
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Ok(count("dropped_undecryptable") + count("dropped_non_contact"))
    }

    /// `pairs` identities in home `a` and in home `b`, a{i} paired with b{i}.
    fn pair(&self, pairs: usize) -> Result<(), Error> {
        for i in 0..pairs {
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            self.cli("a", &["init", "--name", &a, "--relay", &self.url])?;
            self.cli("b", &["init", "--name", &b, "--relay", &self.url])?;
            let token = self.cli("b", &["--as", &b, "invite"])?;
            self.cli("a", &["--as", &a, "accept", &token, "--name", &b])?;
        }
        Ok(())
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for side in ["a", "b"] {
            let _ = self.cli(side, &["daemon", "stop"]);
        }
        let _ = self.relay.kill();
        let _ = self.relay.wait();
    }
}

/// A body of `size` bytes.
fn body(size: usize, n: usize) -> String {
    let mut body = format!("m{n} ");
    while body.len() < size {
        body.push('x');
    }
    body
}

async fn run(args: Args, exe: PathBuf) -> Result<(), Error> {
    let mut report = serde_json::Map::new();
    let all = args.scenario == Scenario::All;
    if all || args.scenario == Scenario::Throughput {
        let setup = Setup::start(&exe).await?;
        setup.pair(args.pairs)?;
        let result = throughput(&setup, &args).await?;
        report.insert("throughput".into(), result);
    }
    if all || args.scenario == Scenario::Latency {
        let setup = Setup::start(&exe).await?;
        setup.pair(1)?;
        let result = latency(&setup, &args).await?;
        report.insert("latency".into(), result);
    }
    if all || args.scenario == Scenario::Backlog {
        let setup = Setup::start(&exe).await?;
        setup.pair(1)?;
        let result = backlog(&setup, &args).await?;
        report.insert("backlog".into(), result);
    }
    if all || args.scenario == Scenario::Call {
        let setup = Setup::start(&exe).await?;
        setup.pair(1)?;
        let result = call(&setup, &args).await?;
        report.insert("call".into(), result);
    }
    if all || args.scenario == Scenario::Relay {
        let result = relay_alone(&exe, &args).await?;
        report.insert("relay".into(), result);
    }
    if args.scenario == Scenario::Mcp {
        let result = mcp(&exe, &args)?;
        report.insert("mcp".into(), result);
    }
    if all || args.scenario == Scenario::Fanout {
        let setup = Setup::start(&exe).await?;
        let result = fanout(&setup, &args).await?;
        report.insert("fanout".into(), result);
    }
    if all || args.scenario == Scenario::Growth {
        let result = growth(&exe, &args).await?;
        report.insert("growth".into(), result);
    }
    if all || args.scenario == Scenario::Cli {
        let setup = Setup::start(&exe).await?;
        setup.pair(1)?;
        let result = cli(&setup, &args)?;
        report.insert("cli".into(), result);
    }
    if all || args.scenario == Scenario::Costs {
        let result = costs(&args)?;
        report.insert("costs".into(), result);
    }
    if all || args.scenario == Scenario::Connections {
        let result = connections(&exe, &args).await?;
        report.insert("connections".into(), result);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(report));
    }
    Ok(())
}

/// The relay alone as its own process: relay-bench (next to this program)
/// drives it over loopback.
async fn relay_alone(exe: &Path, args: &Args) -> Result<serde_json::Value, Error> {
    let setup = Setup::start(exe).await?;
    let bench = std::env::current_exe()?
        .parent()
        .ok_or("no directory for this program")?
        .join("relay-bench");
    let mut command = Command::new(&bench);
    command.args(["--relay-url", &setup.url, "--json"]);
    if args.smoke {
        command.arg("--smoke");
    }
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    if !output.status.success() {
        return Err(format!(
            "{} failed: {}",
            bench.display(),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    if !args.json {
        let get = |key: &str| result.get(key).and_then(serde_json::Value::as_f64);
        let accepted = result.get("send_to_accepted_ms");
        let at = |q: &str| {
            accepted
                .and_then(|a| a.get(q))
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        println!(
            "relay: a relay process, {} senders → {} recipients, {} × {} B: {:.0} msg/s; send→accepted p50 {:.2} ms, p99 {:.2} ms",
            result.get("senders").unwrap_or(&serde_json::Value::Null),
            result.get("recipients").unwrap_or(&serde_json::Value::Null),
            result.get("messages").unwrap_or(&serde_json::Value::Null),
            result
                .get("payload_bytes")
                .unwrap_or(&serde_json::Value::Null),
            get("msgs_per_sec").unwrap_or(0.0),
            at("p50"),
            at("p99"),
        );
    }
    Ok(result)
}

/// The MCP door: `mcp_bench.py` (next to this crate's sources) run with the
/// workspace's `.venv` Python, which has the MCP SDK (`cargo test` sets it
/// up), or `AGENTWIRE_BENCH_PYTHON`.
fn mcp(exe: &Path, args: &Args) -> Result<serde_json::Value, Error> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = crate_dir.join("mcp_bench.py");
    let python = match std::env::var_os("AGENTWIRE_BENCH_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => crate_dir.join("../../.venv/bin/python"),
    };
    if !python.exists() {
        return Err(format!(
            "{} not found: run `cargo test` once (it makes .venv with the MCP SDK) or set AGENTWIRE_BENCH_PYTHON",
            python.display()
        )
        .into());
    }
    let mut command = Command::new(&python);
    command.arg(&script).arg("--exe").arg(exe).arg("--json");
    if args.smoke {
        command.arg("--smoke");
    } else {
        command.args(["--n", &args.samples.to_string()]);
    }
    let output = command.stderr(Stdio::inherit()).output()?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", script.display(), output.status).into());
    }
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    if !args.json {
        let p50 = |key: &str| {
            result
                .get(key)
                .and_then(|m| m.get("p50_ms"))
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        println!(
            "mcp: {} rounds: whoami p50 {:.2} ms; send {:.2} ms; send→push at the other client {:.2} ms; send→wait {:.2} ms",
            if args.smoke { 5 } else { args.samples },
            p50("whoami"),
            p50("send"),
            p50("send->push"),
            p50("send->wait"),
        );
    }
    Ok(result)
}

/// One agent (`a0`) sends to N others (`f0`…, each its contact, in the
/// other home), round robin, W sends in flight; each takes with `recv`.
async fn fanout(setup: &Setup, args: &Args) -> Result<serde_json::Value, Error> {
    let fans = if args.smoke { 3 } else { 16 };
    setup.cli("a", &["init", "--name", "a0", "--relay", &setup.url])?;
    for i in 0..fans {
        let name = format!("f{i}");
        setup.cli("b", &["init", "--name", &name, "--relay", &setup.url])?;
        let token = setup.cli("b", &["--as", &name, "invite"])?;
        setup.cli("a", &["--as", "a0", "accept", &token, "--name", &name])?;
    }
    let per_fan = args.messages / fans;
    let sender = Agent::open(&setup.home("a"), "a0");
    let started = Instant::now();
    let mut receiving = tokio::task::JoinSet::new();
    for i in 0..fans {
        let fan = Agent::open(&setup.home("b"), &format!("f{i}"));
        receiving.spawn(async move { take(&fan, per_fan).await });
    }
    let messages = (0..per_fan * fans).map(|n| (format!("f{}", n % fans), body(args.payload, n)));
    send_windowed(&sender, args.window, messages, |_| {}).await?;
    let mut last = started;
    while let Some(got) = receiving.join_next().await {
        for (_, at) in got?? {
            last = last.max(at);
        }
    }
    let elapsed = last.duration_since(started);
    let total = per_fan * fans;
    let rate = total as f64 / elapsed.as_secs_f64();
    if !args.json {
        println!(
            "fanout: one sender to {fans} contacts, window {}, {total} × {} B: {rate:.0} msg/s ({:.2} s)",
            args.window,
            args.payload,
            elapsed.as_secs_f64()
        );
    }
    Ok(serde_json::json!({
        "recipients": fans, "window": args.window, "messages": total,
        "payload": args.payload, "msg_per_s": rate, "seconds": elapsed.as_secs_f64(),
    }))
}

/// The throughput scenario over a grid: 1, 4, 16 and 64 pairs (the first N
/// of 64 paired once), each with 100 B, 4 KiB and 64 KiB bodies. Each cell
/// sends the same number of bytes per pair count, capped by message count.
async fn growth(exe: &Path, args: &Args) -> Result<serde_json::Value, Error> {
    let (pair_counts, payloads): (&[usize], &[usize]) = if args.smoke {
        (&[1, 2], &[100, 4096])
    } else {
        (&[1, 4, 16, 64], &[100, 4096, 65536])
    };
    let most = pair_counts.iter().copied().max().unwrap_or(1);
    let setup = Setup::start(exe).await?;
    setup.pair(most)?;
    let mut rows = Vec::new();
    for &pairs in pair_counts {
        for &payload in payloads {
            // 20 000 small messages; fewer large ones (at most 64 MiB in
            // all), and at least 8 per pair.
            let messages = (64 * 1024 * 1024 / payload)
                .min(if args.smoke { 40 } else { 20_000 })
                .max(pairs * 8);
            let cell = Args {
                pairs,
                payload,
                messages: messages - messages % pairs,
                json: true,
                ..args.clone()
            };
            let result = throughput(&setup, &cell).await?;
            if !args.json {
                let get = |key: &str| result.get(key).and_then(serde_json::Value::as_f64);
                println!(
                    "growth: {pairs:>2} pairs × {payload:>5} B, {} messages: {:>6.0} msg/s ({:>6.1} MB/s); send→received p50 {:>7.1} ms, p99 {:>7.1} ms",
                    cell.messages,
                    get("msg_per_s").unwrap_or(0.0),
                    get("msg_per_s").unwrap_or(0.0) * payload as f64 / 1e6,
                    get("p50_ms").unwrap_or(0.0),
                    get("p99_ms").unwrap_or(0.0),
                );
            }
            rows.push(result);
        }
    }
    Ok(serde_json::Value::Array(rows))
}

/// Runs `agentwire --home HOME ARGS` once; its wall time.
fn timed(setup: &Setup, side: &str, args: &[&str]) -> Result<Duration, Error> {
    let started = Instant::now();
    let status = Command::new(&setup.exe)
        .arg("--home")
        .arg(setup.home(side))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let took = started.elapsed();
    if !status.success() {
        return Err(format!("agentwire {} failed: {status}", args.join(" ")).into());
    }
    Ok(took)
}

/// One-shot commands against warm daemons, one at a time with a pause
/// between them (so that each starts on an idle machine, as an agent's
/// command would): `send`, `recv` of a message that is waiting, and
/// `--version`, the cost of starting the process at all.
fn cli(setup: &Setup, args: &Args) -> Result<serde_json::Value, Error> {
    let pause = Duration::from_millis(20);
    let text = body(args.payload, 0);
    let mut rows = serde_json::Map::new();
    let mut measure =
        |name: &str, run: &mut dyn FnMut() -> Result<Duration, Error>| -> Result<(), Error> {
            for _ in 0..5 {
                run()?;
            }
            let mut samples = Vec::with_capacity(args.samples);
            for _ in 0..args.samples {
                std::thread::sleep(pause);
                samples.push(run()?);
            }
            let (p50, p99) = percentiles(&mut samples);
            if !args.json {
                println!(
                    "cli: {name}, {} runs: p50 {:.2} ms, p99 {:.2} ms",
                    args.samples,
                    ms(p50),
                    ms(p99)
                );
            }
            rows.insert(
                name.to_owned(),
                serde_json::json!({"p50_ms": ms(p50), "p99_ms": ms(p99)}),
            );
            Ok(())
        };
    measure("--version", &mut || timed(setup, "a", &["--version"]))?;
    measure("send", &mut || {
        timed(setup, "a", &["--as", "a0", "send", "b0", &text])
    })?;
    // Each recv takes one message that is already there.
    measure("recv", &mut || {
        setup.cli("a", &["--as", "a0", "send", "b0", &text])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // `inbox` exits 1 while nothing is unread.
        while setup.cli("b", &["--as", "b0", "inbox"]).is_err() {
            if Instant::now() > deadline {
                return Err("a message did not arrive".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        timed(setup, "b", &["--as", "b0", "recv", "--max", "1"])
    })?;
    Ok(serde_json::Value::Object(rows))
}

/// The median of `runs` timings of `step`, in microseconds.
fn median_us(runs: usize, mut step: impl FnMut() -> Result<(), Error>) -> Result<f64, Error> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        step()?;
        samples.push(started.elapsed());
    }
    let (p50, _) = percentiles(&mut samples);
    Ok(p50.as_secs_f64() * 1e6)
}

/// The fixed costs of one message, each alone: Olm seal and open, a
/// session's pickle, an fsync.
fn costs(args: &Args) -> Result<serde_json::Value, Error> {
    use agentwire_session::{Identity, Kind, MessageId, Name, PickleKey, Plaintext, Priority};
    let runs = if args.smoke { 50 } else { 2000 };
    let plaintext = || Plaintext {
        id: MessageId::new_v7(),
        kind: Kind::Chat,
        priority: Priority::Normal,
        sent_at_ms: 1,
        reply_to: None,
        thread: None,
        chain: None,
        seq: None,
        body: body(args.payload, 0).into_bytes(),
    };
    let alice = Identity::generate(Name::new("alice")?);
    let mut bob = Identity::generate(Name::new("bob")?);
    let otk = bob.new_one_time_key()?;
    let mut to_bob = alice.open_session(bob.curve25519(), otk)?;
    let first = to_bob.seal(&plaintext())?;
    let (mut to_alice, _) = bob.accept_session(alice.curve25519(), &first)?;
    // Bob answers once, so that alice's next seals are plain chain steps.
    to_bob.open(&to_alice.seal(&plaintext())?)?;

    // One direction: alice seals, bob opens, again and again.
    let mut sealed = Vec::with_capacity(runs);
    let message = plaintext();
    let seal_us = median_us(runs, || {
        sealed.push(to_bob.seal(&message)?);
        Ok(())
    })?;
    let mut sealed = sealed.into_iter();
    let open_us = median_us(runs, || {
        to_alice.open(&sealed.next().ok_or("no more sealed")?)?;
        Ok(())
    })?;
    // The direction turns each time: a ratchet step on each side.
    let turn_us = median_us(runs / 4, || {
        let there = to_bob.seal(&plaintext())?;
        to_alice.open(&there)?;
        let back = to_alice.seal(&plaintext())?;
        to_bob.open(&back)?;
        Ok(())
    })? / 2.0;
    let key = PickleKey::generate().map_err(|e| format!("no randomness: {e}"))?;
    let pickle_us = median_us(runs, || {
        std::hint::black_box(to_bob.to_encrypted_pickle(&key));
        Ok(())
    })?;
    // fsync of a 4 KiB write in the temporary directory (where the
    // benchmark's databases live).
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("fsync"))?;
    let page = vec![7u8; 4096];
    let fsync_us = median_us(runs / 4, || {
        use std::io::Write;
        file.write_all(&page)?;
        file.sync_data()?;
        Ok(())
    })?;
    if !args.json {
        println!(
            "costs ({} B bodies, medians): Olm seal {seal_us:.1} µs, open {open_us:.1} µs; a seal and open when the direction turns (ratchet step) {turn_us:.1} µs; session pickle {pickle_us:.1} µs; 4 KiB write + fdatasync {fsync_us:.1} µs",
            args.payload
        );
    }
    Ok(serde_json::json!({
        "payload": args.payload, "seal_us": seal_us, "open_us": open_us,
        "turn_seal_open_us": turn_us, "pickle_us": pickle_us, "fsync_us": fsync_us,
    }))
}

/// A process's resident memory, in bytes (Linux: `VmRSS`).
fn rss_bytes(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/PID/status")?;
    Ok(kib * 1024)
}

/// For each count K: a fresh relay process, K connections opened and
/// authenticated (64 handshakes at a time), held idle; the relay's resident
/// memory before and after, per connection.
async fn connections(exe: &Path, args: &Args) -> Result<serde_json::Value, Error> {
    // One descriptor per connection here, and one in the relay (which
    // raises its own limit too).
    let (_, open_files) = agentwire_relay::raise_open_files_limit();
    if let Some(limit) = open_files {
        let most = args.connections.iter().copied().max().unwrap_or(0);
        if (limit as usize) < most + 256 {
            return Err(format!(
                "{most} connections need about {} open files; this process may open {limit} (ulimit -Hn)",
                most + 256
            )
            .into());
        }
    }
    let mut rows = Vec::new();
    for &count in &args.connections {
        let limit = (count + 100).to_string();
        let setup = Setup::start_with(
            exe,
            &[
                "--max-connections",
                &limit,
                "--max-connections-per-ip",
                &limit,
            ],
        )
        .await?;
        let pid = setup.relay.id();
        let config = agentwire_client::ClientConfig::new(setup.url.clone());
        // One connection first, so that what every connection shares (the
        // runtime's threads, the store's caches) is counted before.
        {
            let key = key()?;
            let _first = agentwire_client::Connection::open(&config, &key).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_bytes(pid)?;
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(64));
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..count {
            let (gate, config) = (gate.clone(), config.clone());
            opening.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let key = key()?;
                let (connection, _) = agentwire_client::Connection::open(&config, &key).await?;
                Ok::<_, Error>(connection)
            });
        }
        let mut held = Vec::with_capacity(count);
        while let Some(opened) = opening.join_next().await {
            held.push(opened??);
        }
        let opened_in = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_bytes(pid)?;
        let per = after.saturating_sub(before) as f64 / count as f64;
        if !args.json {
            println!(
                "connections: {count} idle authenticated connections opened in {:.2} s; relay RSS {:.1} MB before, {:.1} MB after: {:.1} KB per connection",
                opened_in.as_secs_f64(),
                before as f64 / 1e6,
                after as f64 / 1e6,
                per / 1e3
            );
        }
        rows.push(serde_json::json!({
            "connections": count, "open_s": opened_in.as_secs_f64(),
            "rss_before_bytes": before, "rss_after_bytes": after,
            "bytes_per_connection": per,
        }));
        drop(held);
    }
    Ok(serde_json::Value::Array(rows))
}

/// A fresh Ed25519 key.
fn key() -> Result<ed25519_dalek::SigningKey, Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// A plain round trip, then `call` to `serve --on-message cat`.
async fn call(setup: &Setup, args: &Args) -> Result<serde_json::Value, Error> {
    let (asker, worker) = agents(setup, 0);
    let mut plain = Vec::with_capacity(args.samples);
    for n in 0..args.samples + 5 {
        let started = Instant::now();
        asker.send("b0", &body(args.payload, n)).await?;
        take(&worker, 1).await?;
        worker.send("a0", &body(args.payload, n)).await?;
        take(&asker, 1).await?;
        if n >= 5 {
            plain.push(started.elapsed());
        }
    }
    let mut serve = Command::new(&setup.exe)
        .arg("--home")
        .arg(setup.home("b"))
        .args([
            "--as",
            "b0",
            "serve",
            "--on-message",
            "cat",
            "--rate",
            "10000",
        ])
        .args(["--concurrency", "1", "--queue", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut called = Vec::with_capacity(args.samples);
    let mut outcome = Ok(());
    for n in 0..args.samples + 5 {
        let text = body(args.payload, n);
        let started = Instant::now();
        match asker.call("b0", &text, Duration::from_secs(30)).await {
            Ok(done) if done.result.as_ref().is_some_and(|r| r.body == text) => {
                if n >= 5 {
                    called.push(started.elapsed());
                }
            }
            Ok(done) => {
                outcome = Err(format!("call {n} ended {}", done.task.state));
                break;
            }
            Err(error) => {
                outcome = Err(format!("call {n}: {error}"));
                break;
            }
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    outcome?;
    let (plain_p50, plain_p99) = percentiles(&mut plain);
    let (call_p50, call_p99) = percentiles(&mut called);
    if !args.json {
        println!(
            "call: one at a time, {} × {} B: plain round trip p50 {:.2} ms, p99 {:.2} ms; call to serve cat p50 {:.2} ms, p99 {:.2} ms",
            args.samples,
            args.payload,
            ms(plain_p50),
            ms(plain_p99),
            ms(call_p50),
            ms(call_p99)
        );
    }
    Ok(serde_json::json!({
        "samples": args.samples, "payload": args.payload,
        "round_trip_p50_ms": ms(plain_p50), "round_trip_p99_ms": ms(plain_p99),
        "call_p50_ms": ms(call_p50), "call_p99_ms": ms(call_p99),
    }))
}

fn agents(setup: &Setup, i: usize) -> (Agent, Agent) {
    (
        Agent::open(&setup.home("a"), &format!("a{i}")),
        Agent::open(&setup.home("b"), &format!("b{i}")),
    )
}

/// Sends each `(to, body)` in turn with at most `window` sends in flight,
/// calling `starting(n)` as the n-th starts; returns once all are queued.
async fn send_windowed(
    sender: &Agent,
    window: usize,
    messages: impl Iterator<Item = (String, String)>,
    mut starting: impl FnMut(usize),
) -> Result<(), Error> {
    let window = Arc::new(Semaphore::new(window.max(1)));
    let mut sends = tokio::task::JoinSet::new();
    for (n, (to, body)) in messages.enumerate() {
        let permit = window.clone().acquire_owned().await?;
        starting(n);
        let sender = sender.clone();
        sends.spawn(async move {
            let sent = sender.send(&to, &body).await;
            drop(permit);
            sent
        });
        while let Some(done) = sends.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sends.join_next().await {
        done??;
    }
    Ok(())
}

/// Takes messages until `count` have arrived; when each arrived.
async fn take(agent: &Agent, count: usize) -> Result<Vec<(usize, Instant)>, Error> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let messages = agent.recv(Duration::from_secs(30)).await?;
        if messages.is_empty() {
            return Err(format!("{} of {count} arrived within 30 s", got.len()).into());
        }
        let now = Instant::now();
        for message in messages {
            let n = message
                .body
                .strip_prefix('m')
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .ok_or("a message that is not the benchmark's")?;
            got.push((n, now));
        }
    }
    Ok(got)
}

async fn throughput(setup: &Setup, args: &Args) -> Result<serde_json::Value, Error> {
    let per_pair = args.messages / args.pairs;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.pairs {
        let (sender, receiver) = agents(setup, i);
        let payload = args.payload;
        let window = args.window;
        let to = format!("b{i}");
        tasks.spawn(async move {
            let receiving = tokio::spawn(async move { take(&receiver, per_pair).await });
            let mut sent_at = vec![started; per_pair];
            let messages = (0..per_pair).map(|n| (to.clone(), body(payload, n)));
            send_windowed(&sender, window, messages, |n| sent_at[n] = Instant::now()).await?;
            let got = receiving.await??;
            let latencies: Vec<Duration> = got
                .iter()
                .map(|(n, at)| at.saturating_duration_since(sent_at[*n]))
                .collect();
            let last = got.iter().map(|(_, at)| *at).max().unwrap_or(started);
            Ok::<_, Error>((latencies, last))
        });
    }
    let mut latencies = Vec::new();
    let mut last = started;
    while let Some(done) = tasks.join_next().await {
        let (mut pair, pair_last) = done??;
        latencies.append(&mut pair);
        last = last.max(pair_last);
    }
    let elapsed = last.duration_since(started);
    let total = per_pair * args.pairs;
    let dropped = setup.dropped()?;
    let rate = total as f64 / elapsed.as_secs_f64();
    let (p50, p99) = percentiles(&mut latencies);
    if !args.json {
        println!(
            "throughput: {} pairs, window {}, {total} × {} B: {rate:.0} msg/s ({:.2} s); send→received p50 {:.2} ms, p99 {:.2} ms; dropped by the receiving daemon: {dropped}",
            args.pairs,
            args.window,
            args.payload,
            elapsed.as_secs_f64(),
            ms(p50),
            ms(p99)
        );
    }
    Ok(serde_json::json!({
        "pairs": args.pairs, "window": args.window, "messages": total, "payload": args.payload,
        "msg_per_s": rate, "seconds": elapsed.as_secs_f64(),
        "p50_ms": ms(p50), "p99_ms": ms(p99), "dropped": dropped,
    }))
}

async fn latency(setup: &Setup, args: &Args) -> Result<serde_json::Value, Error> {
    let (sender, receiver) = agents(setup, 0);
    // Warm up: sessions, connections, caches.
    for n in 0..5 {
        sender.send("b0", &body(args.payload, n)).await?;
        take(&receiver, 1).await?;
    }
    let mut samples = Vec::with_capacity(args.samples);
    let mut sends = Vec::with_capacity(args.samples);
    for n in 0..args.samples {
        let receiving = {
            let receiver = receiver.clone();
            tokio::spawn(async move { take(&receiver, 1).await })
        };
        // Let the receiver's recv start waiting first.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        sender.send("b0", &body(args.payload, n)).await?;
        sends.push(started.elapsed());
        let got = receiving.await??;
        let at = got.first().map_or(started, |(_, at)| *at);
        samples.push(at.duration_since(started));
    }
    let (p50, p99) = percentiles(&mut samples);
    let (send_p50, send_p99) = percentiles(&mut sends);
    if !args.json {
        println!(
            "latency: one at a time, {} × {} B: send→received p50 {:.2} ms, p99 {:.2} ms (the send call itself: p50 {:.2} ms, p99 {:.2} ms)",
            args.samples,
            args.payload,
            ms(p50),
            ms(p99),
            ms(send_p50),
            ms(send_p99)
        );
    }
    Ok(serde_json::json!({
        "samples": args.samples, "payload": args.payload, "p50_ms": ms(p50), "p99_ms": ms(p99),
        "send_p50_ms": ms(send_p50), "send_p99_ms": ms(send_p99),
    }))
}

async fn backlog(setup: &Setup, args: &Args) -> Result<serde_json::Value, Error> {
    let (sender, receiver) = agents(setup, 0);
    setup.cli("b", &["daemon", "stop"])?;
    let queued_at = Instant::now();
    let mut last = None;
    let window = Arc::new(Semaphore::new(args.window.max(1)));
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..args.messages {
        let permit = window.clone().acquire_owned().await?;
        let (sender, body) = (sender.clone(), body(args.payload, n));
        sends.spawn(async move {
            let sent = sender.send("b0", &body).await;
            drop(permit);
            sent
        });
        while let Some(done) = sends.try_join_next() {
            last = Some(done??.id);
        }
    }
    while let Some(done) = sends.join_next().await {
        last = Some(done??.id);
    }
    let last = last.ok_or("nothing sent")?;
    // Everything at the relay before the receiver comes back.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let unsent = setup.cli("a", &["--as", "a0", "--json", "daemon", "status"])?;
        let status: serde_json::Value = serde_json::from_str(&unsent)?;
        let queued = status.get("queued").and_then(serde_json::Value::as_u64);
        if queued == Some(0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = sender.state(&last.to_string()).await?.state;
    let relayed_in = queued_at.elapsed();
    let started = Instant::now();
    setup.cli("b", &["daemon", "start"])?;
    let got = take(&receiver, args.messages).await?;
    let drained = got
        .iter()
        .map(|(_, at)| *at)
        .max()
        .unwrap_or(started)
        .duration_since(started);
    if !args.json {
        println!(
            "backlog: {} × {} B queued and relayed in {:.2} s (last one {state}); drained to the agent {:.2} s after its daemon started ({:.0} msg/s)",
            args.messages,
            args.payload,
            relayed_in.as_secs_f64(),
            drained.as_secs_f64(),
            args.messages as f64 / drained.as_secs_f64()
        );
    }
    Ok(serde_json::json!({
        "messages": args.messages, "payload": args.payload,
        "relayed_s": relayed_in.as_secs_f64(), "drain_s": drained.as_secs_f64(),
    }))
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (at(0.50), at(0.99))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
