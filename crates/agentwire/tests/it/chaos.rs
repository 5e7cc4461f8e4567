//! kill -9 at random moments: the relay, the sender's daemon and the
//! receiver's daemon are each killed with SIGKILL and restarted while 2,000
//! messages flow. Afterwards every message whose `send` returned is in the
//! receiver's store exactly once, and the sender sees each one delivered.
//! Bounded in count and time; prints its counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

const MESSAGES: usize = 2000;
/// The whole test gives up after this long.
const BUDGET: Duration = Duration::from_secs(240);

#[test]
fn nothing_reported_as_sent_is_lost_or_duplicated_across_kill_9_of_every_process() {
    let started = Instant::now();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("chaos seed {seed}");
    let relay_dir = tempfile::tempdir().unwrap();
    let relay_home = relay_dir.path().join("home");
    let relay = RelayProcess::spawn(&relay_home, "127.0.0.1:0", &[]);
    let relay_addr = relay.addr.to_string();
    let url = relay.url.clone();
    let relay = std::sync::Mutex::new(relay);
    let (alice, bob) = (TestHome::new(), TestHome::new());
    alice
        .run(&["init", "--name", "alice", "--relay", &url])
        .ok();
    bob.run(&["init", "--name", "bob", "--relay", &url]).ok();
    let token = alice.run(&["invite"]).ok().stdout.trim().to_owned();
    bob.run(&["accept", &token]).ok();

    let sending = AtomicBool::new(true);
    let kills = AtomicUsize::new(0);
    let attempts = AtomicUsize::new(0);
    // Ids of the messages whose send returned (by body, for the log).
    let mut sent: HashMap<String, String> = HashMap::new();

    std::thread::scope(|scope| {
        // Chaos: while sending, every 50-300 ms kill one process and bring
        // it back.
        scope.spawn(|| {
            let mut rng = Rng(seed);
            while sending.load(Ordering::Relaxed) && started.elapsed() < BUDGET {
                std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
                match rng.below(3) {
                    0 => {
                        let mut relay = relay.lock().unwrap();
                        relay.signal("-KILL");
                        relay.wait();
                        *relay = RelayProcess::spawn(&relay_home, &relay_addr, &[]);
                    }
                    which => {
                        let home = if which == 1 { &alice } else { &bob };
                        if let Some(pid) = daemon_pid(home) {
                            kill_9(pid);
                        }
                        std::thread::sleep(Duration::from_millis(rng.below(100)));
                        home.run(&["daemon", "start"]);
                    }
                }
                kills.fetch_add(1, Ordering::Relaxed);
            }
        });

        // The sender: a message counts as sent once `send` returned its id.
        for n in 0..MESSAGES {
            let body = format!("msg-{n:05}");
            let id = send_counted(&alice, "bob", &body, &attempts, started, BUDGET);
            sent.insert(body, id);
        }
        sending.store(false, Ordering::Relaxed);
    });

    // Everything is up again; wait for every sent message to arrive.
    alice.run(&["daemon", "start"]).ok();
    bob.run(&["daemon", "start"]).ok();
    check_every_sent_message_arrives_once(
        "chaos",
        &alice,
        &bob,
        &sent,
        attempts.load(Ordering::Relaxed),
        kills.load(Ordering::Relaxed),
        started,
        BUDGET,
    );
    assert_eq!(sent.len(), MESSAGES);
    assert!(
        kills.load(Ordering::Relaxed) >= 3,
        "too few kills to mean anything"
    );
}
