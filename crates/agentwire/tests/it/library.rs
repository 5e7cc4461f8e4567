//! The Rust library with the daemon in process (`EmbeddedDaemon`): what an
//! in-process agent sees, and what a slow or silent subscriber costs.

use std::collections::HashSet;
use std::time::Duration;

use agentwire::{Agent, DeliveryState, EmbeddedDaemon};

use crate::util::TestHome;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A home with its daemon in this process and two identities, `a` and `b`.
async fn siblings() -> (tempfile::TempDir, EmbeddedDaemon, Agent, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = EmbeddedDaemon::start(&dir.path().join("home"))
        .await
        .unwrap();
    let a = daemon.init("a").await.unwrap();
    let b = daemon.init("b").await.unwrap();
    (dir, daemon, a, b)
}

#[test]
fn a_subscriber_that_never_acks_sees_every_message_and_costs_no_intake() {
    runtime().block_on(async {
        let (_dir, daemon, a, b) = siblings().await;
        // More than a subscription reads from the store at once (1000).
        let total = 1500;
        let mut stream = b.messages().await.unwrap();
        let mut last = None;
        for n in 0..total {
            last = Some(a.send("b", &format!("m{n}")).await.unwrap().id);
        }
        let mut seen = HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < total {
            let message = tokio::time::timeout_at(deadline, stream.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {total} shown", seen.len()))
                .unwrap();
            assert!(seen.insert(message.body), "a message was shown twice");
        }
        // Nothing was taken: all of it is still unread, and the intake kept
        // up (the last one is delivered).
        let state = a
            .wait_for(
                &last.unwrap(),
                DeliveryState::Delivered,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(state, DeliveryState::Delivered);
        let taken = b.recv(Duration::ZERO).await.unwrap();
        assert_eq!(taken.len(), 100, "recv takes at most 100 at a time");
        daemon.stop().await;
    });
}

#[test]
fn wait_for_returns_when_the_state_is_reached_without_polling() {
    runtime().block_on(async {
        let (_dir, daemon, a, b) = siblings().await;
        let sent = a.send("b", "hello").await.unwrap();
        // Not read yet: the wait runs out and says where it is.
        let state = a
            .wait_for(&sent.id, DeliveryState::Read, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(state < DeliveryState::Read, "{state}");
        let reader = tokio::spawn(async move { b.recv(Duration::from_secs(10)).await });
        let state = a
            .wait_for(&sent.id, DeliveryState::Read, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(state, DeliveryState::Read);
        assert_eq!(reader.await.unwrap().unwrap()[0].body, "hello");
        daemon.stop().await;
    });
}

#[test]
fn concurrent_sends_to_one_contact_all_arrive() {
    // Sends race for one session; each is sealed and goes out in the same
    // order, so the recipient's ratchet never meets more reordering than it
    // can take.
    runtime().block_on(async {
        let (_dir, daemon, a, b) = siblings().await;
        let (senders, each) = (48, 40);
        let mut tasks = tokio::task::JoinSet::new();
        for s in 0..senders {
            let a = a.clone();
            tasks.spawn(async move {
                for n in 0..each {
                    a.send("b", &format!("{s}-{n}")).await.unwrap();
                }
            });
        }
        let mut seen = HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < senders * each {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {} arrived",
                seen.len(),
                senders * each
            );
            for message in b.recv(Duration::from_secs(5)).await.unwrap() {
                assert!(seen.insert(message.body), "a message arrived twice");
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        daemon.stop().await;
    });
}

/// Requests reuse their connection to the daemon; a daemon that stopped and
/// started again between two requests costs the second one nothing (the
/// closed connection is noticed before it is used).
#[test]
fn a_reused_daemon_connection_survives_a_daemon_restart() {
    let home = TestHome::new();
    home.run(&["init", "--name", "alice"]).ok();
    runtime().block_on(async {
        let agent = Agent::open(&home.path(), "alice");
        for _ in 0..3 {
            agent.card().await.unwrap();
        }
        home.run(&["daemon", "stop"]).ok();
        home.run(&["daemon", "start"]).ok();
        for _ in 0..3 {
            agent.card().await.unwrap();
        }
    });
    home.run(&["daemon", "stop"]).ok();
}
