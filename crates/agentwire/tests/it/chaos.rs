//! kill -9 at random moments: the relay, the sender's daemon and the
//! receiver's daemon are each killed with SIGKILL and restarted while 2,000
//! messages flow. Afterwards every message whose `send` returned is in the
//! receiver's store exactly once, and the sender sees each one delivered.
//! Bounded in count and time; prints its counts.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

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
            loop {
                assert!(started.elapsed() < BUDGET, "sending did not finish in time");
                attempts.fetch_add(1, Ordering::Relaxed);
                match try_api(&alice, &json!({"op": "send", "to": "bob", "body": body})) {
                    Some(result) => {
                        sent.insert(body.clone(), result["id"].as_str().unwrap().to_owned());
                        break;
                    }
                    None => {
                        // Down or killed mid-request: make sure it runs,
                        // then send again (a new message; the old one may or
                        // may not have been stored, and is not counted).
                        alice.run(&["daemon", "start"]);
                    }
                }
            }
        }
        sending.store(false, Ordering::Relaxed);
    });

    // Everything is up again; wait for every sent message to arrive.
    alice.run(&["daemon", "start"]).ok();
    bob.run(&["daemon", "start"]).ok();
    // Message ids as the receiver's store hands them out: a second copy of a
    // message would show up as its id twice.
    let mut received: Vec<String> = Vec::new();
    // Ids handed out in a take whose ack was not confirmed: they may come
    // again without being duplicates.
    let mut unconfirmed_takes: HashSet<String> = HashSet::new();
    let expected: HashSet<&String> = sent.values().collect();
    while started.elapsed() < BUDGET {
        // Taken with confirm (a daemon killed between marking messages read
        // and answering would otherwise lose them to this reader); a copy
        // handed out again after an unconfirmed take is not a duplicate.
        if let Some((messages, confirmed)) = try_recv_confirmed(&bob, 1000) {
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
    if let Some((messages, _)) = try_recv_confirmed(&bob, 0) {
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
    while started.elapsed() < BUDGET {
        if let Some(list) = try_api(&alice, &json!({"op": "sent", "max": 100000})) {
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
        "chaos: sent {} (in {} attempts), received {} unique ({} from unconfirmed sends), duplicates {duplicates}, lost {}, not delivered per sender {not_delivered}, kills {}, {:.1} s",
        sent.len(),
        attempts.load(Ordering::Relaxed),
        unique.len(),
        unconfirmed,
        lost.len(),
        kills.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(sent.len(), MESSAGES);
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
    assert!(
        kills.load(Ordering::Relaxed) >= 3,
        "too few kills to mean anything"
    );
}
