//! The fault harness. Four agents, each with its own daemon, send each other
//! messages through one relay process while, at random moments:
//! - the relay is killed with SIGKILL and started again;
//! - an agent's daemon is killed with SIGKILL and started again;
//! - every connection to the relay is cut in the middle of what it carries
//!   (a proxy forwards part of a read and closes both sides);
//! - the relay's disk fills up (its home is a small tmpfs, filled to the last
//!   byte for a while, then freed);
//! - the relay's filesystem turns read-only across a restart (Linux refuses to
//!   make a filesystem read-only under open writers, so the relay is killed
//!   first, tries to start on the read-only disk, and is started again once
//!   the disk is writable).
//!
//! Afterwards every message whose `send` returned is in its recipient's store
//! exactly once, and its sender sees it delivered. Prints sent, received,
//! lost, duplicated, the faults and the time to recover; bounded in count and
//! time. The tmpfs lives in a private mount namespace (`unshare`), as root or,
//! for another user, in a user namespace of its own.
//!
//! The faults come in rounds, each with every kind once in a random order;
//! `AGENTWIRE_FAULT_ROUNDS=R` (default 3) sets how many, and
//! `AGENTWIRE_FAULT_MESSAGES=N` the least each agent sends (default 150).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

const AGENTS: [&str; 4] = ["ann", "ben", "cat", "dan"];
/// The whole run gives up after this long.
const BUDGET: Duration = Duration::from_secs(300);

/// A tmpfs of `size` on `dir`, visible only inside a mount namespace held by
/// a `sleep` process; processes enter it through [`RelayDisk::enter`]. The
/// namespace, and the tmpfs with it, go when the holder is killed.
struct RelayDisk {
    holder: Child,
    dir: PathBuf,
    user_namespace: bool,
}

impl RelayDisk {
    fn mount(dir: &Path, size: &str) -> RelayDisk {
        std::fs::create_dir_all(dir).unwrap();
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        let mut command = Command::new("unshare");
        if !root {
            command.args(["--user", "--map-root-user"]);
        }
        let mut holder = command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$2" && echo mounted && exec sleep 900"#)
            .args(["sh", size])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("util-linux `unshare` runs");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "mounted",
            "the fault harness needs a private mount namespace for the relay's small disk: \
             run as root, or enable unprivileged user namespaces"
        );
        RelayDisk {
            holder,
            dir: dir.to_owned(),
            user_namespace: !root,
        }
    }

    /// The command prefix that runs a program inside the namespace.
    fn enter(&self) -> Vec<String> {
        let mut prefix = vec![
            "nsenter".to_owned(),
            "-t".to_owned(),
            self.holder.id().to_string(),
        ];
        if self.user_namespace {
            prefix.extend(["-U".to_owned(), "--preserve-credentials".to_owned()]);
        }
        prefix.extend(["-m".to_owned(), "--".to_owned()]);
        prefix
    }

    /// Runs a shell script inside the namespace, with the disk as `$1`;
    /// whether it succeeded.
    fn sh(&self, script: &str) -> bool {
        let prefix = self.enter();
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .args(["sh", "-c", script, "sh"])
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Fills the disk to its last byte.
    fn fill(&self) {
        self.sh(r#"cat /dev/zero > "$1/filler""#);
    }

    fn free(&self) {
        assert!(self.sh(r#"rm -f "$1/filler""#));
    }

    fn remount(&self, mode: &str) {
        let script = format!(r#"mount -o remount,{mode} "$1""#);
        assert!(self.sh(&script), "cannot remount the relay's disk {mode}");
    }
}

impl Drop for RelayDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A TCP proxy in front of the relay that can cut every connection through
/// it in the middle of what it carries.
struct CuttingProxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    stop: Arc<AtomicBool>,
}

/// One proxied connection: its two sockets and the flag that cuts it.
struct Link {
    cut: Arc<AtomicBool>,
    sockets: [TcpStream; 2],
}

impl CuttingProxy {
    fn start(target: SocketAddr) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (links2, stop2) = (links.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                // The relay may be down: then the client's connection just
                // closes, as it would without the proxy.
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let cut = Arc::new(AtomicBool::new(false));
                links2.lock().unwrap().push(Link {
                    cut: cut.clone(),
                    sockets: [client.try_clone().unwrap(), server.try_clone().unwrap()],
                });
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let cut = cut.clone();
                    std::thread::spawn(move || forward(from, to, &cut));
                }
            }
        });
        CuttingProxy { addr, links, stop }
    }

    /// Cuts every open connection: each forwards only part of its next read
    /// and closes; those with nothing in flight are closed after a moment.
    /// Returns how many were cut.
    fn cut(&self) -> usize {
        let links: Vec<Link> = std::mem::take(&mut *self.links.lock().unwrap());
        for link in &links {
            link.cut.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(100));
        for link in &links {
            for socket in &link.sockets {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
        links.len()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

/// Copies `from` to `to` until either closes; once `cut` is set, forwards
/// half of the next read (the cut lands inside whatever was in flight) and
/// closes both.
fn forward(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let whole = !cut.load(Ordering::Relaxed);
        let part = if whole { n } else { n / 2 };
        if to.write_all(&buf[..part]).is_err() || !whole {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// The faults the harness injects, and how often each happened.
#[derive(Default)]
struct Faults {
    relay_kills: AtomicUsize,
    daemon_kills: AtomicUsize,
    cuts: AtomicUsize,
    cut_connections: AtomicUsize,
    disk_full: AtomicUsize,
    read_only: AtomicUsize,
    /// When each fault ended: the time to recover is measured from there.
    ended: Mutex<Vec<Instant>>,
    /// What the relay did when started on a read-only disk.
    read_only_outcomes: Mutex<Vec<String>>,
}

/// Starts the relay on `disk` at `addr` and lets it try to start while the
/// disk is read-only; what it did, in words.
fn start_on_read_only_disk(disk: &RelayDisk, addr: &str) -> String {
    let mut child = RelayProcess::command(&disk.enter())
        .arg("--home")
        .arg(&disk.dir)
        .args(["relay", "--listen", addr, "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            let last = stderr.lines().last().unwrap_or("").to_owned();
            return format!("exited with {} ({last})", status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    "kept running".to_owned()
}

#[test]
fn the_fault_harness_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let setting = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let per_agent = setting("AGENTWIRE_FAULT_MESSAGES", 150);
    let rounds = setting("AGENTWIRE_FAULT_ROUNDS", 3);
    let seed = Rng::from_clock().0;
    println!("fault harness seed {seed}");

    let dir = tempfile::tempdir().unwrap();
    let disk = RelayDisk::mount(&dir.path().join("relay"), "16m");
    let relay = RelayProcess::spawn_via(&disk.enter(), &disk.dir, "127.0.0.1:0", &[]);
    let relay_addr = relay.addr.to_string();
    let relay = Mutex::new(relay);
    let proxy = CuttingProxy::start(relay_addr.parse().unwrap());
    let url = format!("ws://{}", proxy.addr);

    let homes: Vec<TestHome> = AGENTS.iter().map(|_| TestHome::new()).collect();
    for (home, name) in homes.iter().zip(AGENTS) {
        home.run(&["init", "--name", name, "--relay", &url]).ok();
    }
    for i in 0..AGENTS.len() {
        for j in i + 1..AGENTS.len() {
            let link = homes[i].run(&["invite"]).ok().stdout.trim().to_owned();
            homes[j].run_with_stdin(&["accept", "-"], Some(link.as_bytes()));
        }
    }

    let sending = AtomicUsize::new(AGENTS.len());
    // When each agent's daemon last answered, ms from the start.
    let answered: [AtomicU64; 4] = Default::default();
    let faulting = AtomicBool::new(true);
    let receiving = AtomicBool::new(true);
    let faults = Faults::default();
    let attempts = AtomicUsize::new(0);
    // Per sender: (recipient, id) of each message whose send returned.
    let sent: Mutex<Vec<(usize, String)>> = Mutex::default();
    // Per recipient: each message handed out (id, when, whether its ack was
    // confirmed), in order.
    let received: Mutex<Vec<(usize, String, Instant, bool)>> = Mutex::default();

    std::thread::scope(|scope| {
        // The faults: rounds of every kind in a random order, one every
        // 100-400 ms, while the senders keep sending.
        scope.spawn(|| {
            let mut rng = Rng(seed);
            for _ in 0..rounds {
                let mut kinds = Fault::ALL.to_vec();
                while !kinds.is_empty() && started.elapsed() < BUDGET {
                    let fault = kinds.swap_remove(rng.below(kinds.len() as u64) as usize);
                    std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
                    inject(
                        fault,
                        &mut rng,
                        &faults,
                        &disk,
                        &relay,
                        &relay_addr,
                        &proxy,
                        &homes,
                    );
                    faults.ended.lock().unwrap().push(Instant::now());
                }
            }
            faulting.store(false, Ordering::Relaxed);
        });

        // A watchdog: says which daemons have not answered for a while (a
        // run that stalls says where).
        scope.spawn(|| {
            while receiving.load(Ordering::Relaxed) && started.elapsed() < BUDGET {
                std::thread::sleep(Duration::from_secs(5));
                let now = started.elapsed().as_millis() as u64;
                for (who, home) in homes.iter().enumerate() {
                    let silent = now.saturating_sub(answered[who].load(Ordering::Relaxed));
                    if silent > 5_000 {
                        println!(
                            "faults: {} has not answered for {:.1} s (home {}), {} sent in all, {} received",
                            AGENTS[who],
                            silent as f64 / 1000.0,
                            home.path().display(),
                            sent.lock().unwrap().len(),
                            received.lock().unwrap().len()
                        );
                    }
                }
            }
        });

        // The receivers: each agent takes what arrives.
        for (who, home) in homes.iter().enumerate() {
            let (receiving, received, answered) = (&receiving, &received, &answered);
            scope.spawn(move || {
                while receiving.load(Ordering::Relaxed) && started.elapsed() < BUDGET {
                    // Taken with confirm: a message counts once its recv
                    // answered, and a second copy after a confirmed ack is
                    // a duplicate.
                    let Some((messages, confirmed)) = try_recv_confirmed(home, 300) else {
                        home.run(&["daemon", "start"]);
                        continue;
                    };
                    answered[who].store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    let now = Instant::now();
                    let mut received = received.lock().unwrap();
                    for (id, _) in messages {
                        received.push((who, id, now, confirmed));
                    }
                }
            });
        }

        // The senders: a message counts as sent once `send` returned its id.
        for (who, home) in homes.iter().enumerate() {
            let (sending, faulting, sent, attempts) = (&sending, &faulting, &sent, &attempts);
            let answered = &answered;
            scope.spawn(move || {
                let mut rng = Rng(seed.rotate_left(who as u32 * 8) | 1);
                // At least `per_agent` messages, and on until the faults end.
                let mut n = 0;
                while n < per_agent || faulting.load(Ordering::Relaxed) {
                    n += 1;
                    let to = (who + 1 + rng.below(AGENTS.len() as u64 - 1) as usize) % AGENTS.len();
                    let body = format!("{}>{}#{n}", AGENTS[who], AGENTS[to]);
                    loop {
                        assert!(started.elapsed() < BUDGET, "sending did not finish in time");
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let request = json!({"op": "send", "to": AGENTS[to], "body": body});
                        if let Some(result) = try_api(home, &request) {
                            answered[who]
                                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                            let id = result["id"].as_str().unwrap().to_owned();
                            sent.lock().unwrap().push((to, id));
                            break;
                        }
                        // Down or killed mid-request: make sure it runs, then
                        // send again (a new message; the first may or may not
                        // have been stored, and is not counted).
                        home.run(&["daemon", "start"]);
                    }
                }
                sending.fetch_sub(1, Ordering::Relaxed);
            });
        }

        // Once all is sent and the faults have stopped, wait for everything
        // confirmed to arrive, then let stragglers (duplicates, if any) come.
        while sending.load(Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        let sent_ids: HashSet<String> = sent
            .lock()
            .unwrap()
            .iter()
            .map(|(_, id)| id.clone())
            .collect();
        while started.elapsed() < BUDGET {
            let have: HashSet<String> = received
                .lock()
                .unwrap()
                .iter()
                .map(|(_, id, _, _)| id.clone())
                .collect();
            if sent_ids.is_subset(&have) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        receiving.store(false, Ordering::Relaxed);
    });
    let drained = Instant::now();

    let sent = sent.into_inner().unwrap();
    let received = received.into_inner().unwrap();
    // Per id: how many times it was handed out, and how many of those the
    // daemon confirmed as taken.
    let mut copies: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut misdelivered = 0;
    let sent_to: HashMap<&str, usize> = sent.iter().map(|(to, id)| (id.as_str(), *to)).collect();
    for (who, id, _, confirmed) in &received {
        let entry = copies.entry(id.as_str()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(*confirmed);
        if sent_to.get(id.as_str()).is_some_and(|to| to != who) {
            misdelivered += 1;
        }
    }
    let duplicated: usize = copies
        .values()
        .map(|(_, confirmed)| confirmed.saturating_sub(1))
        .sum();
    let again_after_unconfirmed: usize = copies
        .values()
        .map(|(handed, confirmed)| handed.saturating_sub(*confirmed.max(&1)))
        .sum();
    let lost: Vec<&str> = sent
        .iter()
        .map(|(_, id)| id.as_str())
        .filter(|id| !copies.contains_key(id))
        .collect();
    let unconfirmed = copies
        .keys()
        .filter(|id| !sent_to.contains_key(**id))
        .count();

    // The senders' view: every confirmed message ends delivered (or read).
    let mut not_delivered = sent.len();
    while started.elapsed() < BUDGET {
        not_delivered = homes
            .iter()
            .map(|home| {
                let Some(list) = try_api(home, &json!({"op": "sent", "max": 100000})) else {
                    home.run(&["daemon", "start"]);
                    return usize::MAX / 8;
                };
                list["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| sent_to.contains_key(m["id"].as_str().unwrap()))
                    .filter(|m| !matches!(m["state"].as_str(), Some("delivered" | "read")))
                    .count()
            })
            .sum();
        if not_delivered == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The recipients' view: no contact's numbering shows a gap.
    let missing: u64 = homes
        .iter()
        .map(|home| {
            home.api(json!({"op": "contacts"}))["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["missing"].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();

    // The time to recover: from the end of each fault to the next message
    // handed to any recipient.
    let mut arrivals: Vec<Instant> = received.iter().map(|(_, _, at, _)| *at).collect();
    arrivals.sort();
    let ended = faults.ended.lock().unwrap().clone();
    let mut recovery: Vec<Duration> = ended
        .iter()
        .filter_map(|end| arrivals.iter().find(|at| *at > end).map(|at| *at - *end))
        .collect();
    recovery.sort();
    let median = recovery
        .get(recovery.len() / 2)
        .copied()
        .unwrap_or_default();
    let worst = recovery.last().copied().unwrap_or_default();
    let last_fault = ended.last().copied().unwrap_or(started);
    let outcomes = faults.read_only_outcomes.lock().unwrap().clone();
    let outcomes: HashSet<String> = outcomes.into_iter().collect();

    println!(
        "faults: {} agents; sent {} (in {} attempts), received {} unique ({} from unconfirmed sends), \
         lost {}, duplicated {duplicated} (handed out again after an unconfirmed take {again_after_unconfirmed}), misdelivered {misdelivered}, not delivered per sender {not_delivered}, \
         missing per recipient {missing}; \
         relay kills {}, daemon kills {}, cuts {} ({} connections), disk full {}, read-only restarts {}; \
         recovery after a fault median {} ms, max {} ms; all arrived {:.1} s after the last fault; {:.1} s in all",
        AGENTS.len(),
        sent.len(),
        attempts.load(Ordering::Relaxed),
        copies.len(),
        unconfirmed,
        lost.len(),
        faults.relay_kills.load(Ordering::Relaxed),
        faults.daemon_kills.load(Ordering::Relaxed),
        faults.cuts.load(Ordering::Relaxed),
        faults.cut_connections.load(Ordering::Relaxed),
        faults.disk_full.load(Ordering::Relaxed),
        faults.read_only.load(Ordering::Relaxed),
        median.as_millis(),
        worst.as_millis(),
        drained.saturating_duration_since(last_fault).as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    println!("faults: the relay on a read-only disk: {outcomes:?}");
    assert!(sent.len() >= per_agent * AGENTS.len());
    assert!(
        outcomes.iter().all(|o| o.contains("read-only")),
        "a relay on a read-only disk must refuse to start, saying why: {outcomes:?}"
    );
    assert!(
        lost.is_empty(),
        "lost {} messages, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(duplicated, 0, "duplicates in the recipients' stores");
    assert_eq!(misdelivered, 0, "messages handed to the wrong recipient");
    assert_eq!(
        not_delivered, 0,
        "the senders do not see every message delivered"
    );
    assert_eq!(missing, 0, "a recipient's numbering shows a gap");
    for (kind, count) in [
        ("relay kills", &faults.relay_kills),
        ("daemon kills", &faults.daemon_kills),
        ("cuts", &faults.cuts),
        ("disk full", &faults.disk_full),
        ("read-only restarts", &faults.read_only),
    ] {
        assert!(
            count.load(Ordering::Relaxed) >= 1,
            "no {kind}: too few faults to mean anything"
        );
    }
}

/// The kinds of fault.
#[derive(Clone, Copy)]
enum Fault {
    KillRelay,
    KillDaemon,
    Cut,
    DiskFull,
    ReadOnly,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::KillRelay,
        Fault::KillDaemon,
        Fault::Cut,
        Fault::DiskFull,
        Fault::ReadOnly,
    ];
}

/// Injects `fault` and waits for it to end.
#[allow(clippy::too_many_arguments)]
fn inject(
    fault: Fault,
    rng: &mut Rng,
    faults: &Faults,
    disk: &RelayDisk,
    relay: &Mutex<RelayProcess>,
    relay_addr: &str,
    proxy: &CuttingProxy,
    homes: &[TestHome],
) {
    match fault {
        Fault::KillRelay => {
            let mut relay = relay.lock().unwrap();
            relay.signal("-KILL");
            relay.wait();
            *relay = RelayProcess::spawn_via(&disk.enter(), &disk.dir, relay_addr, &[]);
            faults.relay_kills.fetch_add(1, Ordering::Relaxed);
        }
        Fault::KillDaemon => {
            let home = &homes[rng.below(homes.len() as u64) as usize];
            if let Some(pid) = daemon_pid(home) {
                kill_9(pid);
                faults.daemon_kills.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(rng.below(100)));
            home.run(&["daemon", "start"]);
        }
        Fault::Cut => {
            let cut = proxy.cut();
            faults.cuts.fetch_add(1, Ordering::Relaxed);
            faults.cut_connections.fetch_add(cut, Ordering::Relaxed);
        }
        Fault::DiskFull => {
            disk.fill();
            std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
            disk.free();
            faults.disk_full.fetch_add(1, Ordering::Relaxed);
        }
        Fault::ReadOnly => {
            let mut relay = relay.lock().unwrap();
            relay.signal("-KILL");
            relay.wait();
            disk.remount("ro");
            let outcome = start_on_read_only_disk(disk, relay_addr);
            faults.read_only_outcomes.lock().unwrap().push(outcome);
            disk.remount("rw");
            *relay = RelayProcess::spawn_via(&disk.enter(), &disk.dir, relay_addr, &[]);
            faults.read_only.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Found by this harness: an ack the relay could not carry out (its disk
/// full) kept its delivery's place in the connection's window, and once the
/// window was full, deliveries stalled until the next keepalive (a ping
/// interval, here set to 10 minutes). Now such deliveries leave the window at
/// once (and come again on the next connection).
#[tokio::test]
async fn acks_refused_on_a_full_disk_do_not_stall_deliveries() {
    use agentwire_client::{Event, RelayClient};
    let dir = tempfile::tempdir().unwrap();
    let disk = RelayDisk::mount(&dir.path().join("relay"), "16m");
    let relay = RelayProcess::spawn_via(
        &disk.enter(),
        &disk.dir,
        "127.0.0.1:0",
        &["--ping-interval", "10m"],
    );
    let (sender_key, recipient_key) = (new_key(), new_key());
    let to = public(&recipient_key);
    let (sender, _sender_events) =
        RelayClient::connect(relay.client_config(), Arc::new(sender_key))
            .await
            .unwrap();
    // More than a window's worth (256) waits.
    for _ in 0..300 {
        sender.send(to, new_id(), vec![7; 100]).await.unwrap();
    }
    let (recipient, mut events) =
        RelayClient::connect(relay.client_config(), Arc::new(recipient_key))
            .await
            .unwrap();
    let mut window = Vec::new();
    while window.len() < 256 {
        if let Event::Envelope(envelope) = next_event(&mut events).await {
            window.push(envelope.id);
        }
    }
    // Empty the write-ahead log first (Python's sqlite3 inside the disk's
    // namespace), so that the acks' deletions need new space.
    assert!(disk.sh(
        r#"python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("PRAGMA busy_timeout = 5000"); r = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone(); sys.exit(r[0] != 0 or r[1] != 0)' "$1/relay.db""#
    ));
    disk.fill();
    let refused = recipient.ack_batch(&window).await;
    disk.free();
    assert!(
        refused.is_err(),
        "the relay could not have deleted them on a full disk"
    );
    // The other 44 come on this connection, without waiting for a keepalive.
    let mut rest = 0;
    while rest < 44 {
        if let Event::Envelope(envelope) = next_event(&mut events).await {
            assert!(!window.contains(&envelope.id), "not on this connection");
            rest += 1;
        }
    }
}
