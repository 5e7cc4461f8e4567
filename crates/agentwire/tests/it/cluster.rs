//! Relay clusters: several relay nodes sharing one PostgreSQL database (a
//! real server the tests start themselves), clients that fail over between
//! them, and a database that goes away for a while.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentwire_client::{ClientError, Event};
use agentwire_relay::{Database, PostgresConfig, Relay, RelayConfig};
use agentwire_wire::ErrorCode;

use crate::util::*;

/// A relay node on `database`, on a free loopback port, checking for missed
/// notifications every `check`.
async fn node(database: &Database) -> Relay {
    let config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), database.clone());
    Relay::spawn(config).await.unwrap()
}

#[tokio::test]
async fn two_nodes_on_one_database_serve_one_set_of_agents() {
    let database = tokio::task::spawn_blocking(postgres_database)
        .await
        .unwrap();
    let (a, b) = (node(&database).await, node(&database).await);
    assert_eq!(
        a.relay_id(),
        b.relay_id(),
        "the nodes of a cluster share one relay id"
    );

    // An agent on node A and one on node B, both ways.
    let (alice, bob) = (new_key(), new_key());
    let (to_a, mut at_a) = connected_client(&a.url(), &alice).await;
    let (to_b, mut at_b) = connected_client(&b.url(), &bob).await;
    for round in 0..20 {
        let id = new_id();
        to_a.send(public(&bob), id, format!("a->b {round}").into_bytes())
            .await
            .unwrap();
        let envelope = next_envelope(&mut at_b).await;
        assert_eq!((envelope.id, envelope.from), (id, public(&alice)));
        to_b.ack(id).await.unwrap();

        let id = new_id();
        to_b.send(public(&alice), id, format!("b->a {round}").into_bytes())
            .await
            .unwrap();
        let envelope = next_envelope(&mut at_a).await;
        assert_eq!((envelope.id, envelope.from), (id, public(&bob)));
        to_a.ack(id).await.unwrap();
    }

    // An offline recipient's queue, filled through A, drains through B in
    // order; a resend of a delivered id through B is still a duplicate.
    let carol = new_key();
    let ids: Vec<_> = (0..600).map(|_| new_id()).collect();
    for (n, id) in ids.iter().enumerate() {
        to_a.send(public(&carol), *id, format!("#{n}").into_bytes())
            .await
            .unwrap();
    }
    let (to_carol, mut at_carol) = connected_client(&b.url(), &carol).await;
    for (n, id) in ids.iter().enumerate() {
        let envelope = next_envelope(&mut at_carol).await;
        assert_eq!(envelope.id, *id, "envelope #{n} out of order");
        assert_eq!(envelope.payload, format!("#{n}").into_bytes());
        to_carol.ack(envelope.id).await.unwrap();
    }
    assert_no_envelope(&mut at_carol, Duration::from_millis(300)).await;
    to_b.send(public(&carol), ids[0], b"#0".to_vec())
        .await
        .expect_err("a resend of a delivered id from another sender is a conflict");
    to_a.send(public(&carol), ids[0], b"#0".to_vec())
        .await
        .unwrap();
    assert_no_envelope(&mut at_carol, Duration::from_millis(300)).await;

    // Concurrent senders on both nodes to one recipient: every envelope
    // arrives once, and each sender's arrive in the order sent.
    let dave = new_key();
    let (to_dave, mut at_dave) = connected_client(&format!("{},{}", a.url(), b.url()), &dave).await;
    let send_many = |client: agentwire_client::RelayClient, tag: &'static str| {
        let dave = public(&dave);
        tokio::spawn(async move {
            for n in 0..300 {
                client
                    .send(dave, new_id(), format!("{tag}{n:04}").into_bytes())
                    .await
                    .unwrap();
            }
        })
    };
    let (ta, tb) = (send_many(to_a.clone(), "a"), send_many(to_b.clone(), "b"));
    let mut last: HashMap<u8, String> = HashMap::new();
    for _ in 0..600 {
        let envelope = next_envelope(&mut at_dave).await;
        let body = String::from_utf8(envelope.payload).unwrap();
        let previous = last.insert(body.as_bytes()[0], body.clone());
        assert!(
            previous.as_ref().is_none_or(|p| *p < body),
            "{previous:?} then {body}"
        );
        to_dave.ack(envelope.id).await.unwrap();
    }
    ta.await.unwrap();
    tb.await.unwrap();
    assert_no_envelope(&mut at_dave, Duration::from_millis(300)).await;

    for (name, relay) in [("A", &a), ("B", &b)] {
        let (status, body) = http_get(relay.local_addr(), "/health").await;
        assert_eq!(status, 200, "node {name}: {body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["backend"], "postgres");
        assert_eq!(health["database"], "ok");
    }
    let (_, metrics) = http_get(a.local_addr(), "/metrics").await;
    for metric in [
        "agentwire_relay_postgres_pool_connections",
        "agentwire_relay_postgres_notifications_total",
        "agentwire_relay_postgres_listener_connects_total",
    ] {
        assert!(metrics.contains(metric), "{metric} missing from /metrics");
    }
    drop((to_a, to_b, to_carol, to_dave));
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn killing_a_node_costs_its_clients_one_reconnect_and_no_message() {
    const MESSAGES: usize = 2000;
    const BUDGET: Duration = Duration::from_secs(240);
    let started = Instant::now();
    let database = match postgres_database() {
        Database::Postgres(config) => config.url().to_owned(),
        Database::Sqlite(_) => unreachable!(),
    };
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut node_a = RelayProcess::spawn(home_a.path(), "127.0.0.1:0", &["--db", &database]);
    let node_b = RelayProcess::spawn(home_b.path(), "127.0.0.1:0", &["--db", &database]);
    // Both agents are on node A (first in their list) when it dies.
    let urls = format!("{},{}", node_a.url, node_b.url);
    let (alice, bob) = (TestHome::new(), TestHome::new());
    alice
        .run(&["init", "--name", "alice", "--relay", &urls])
        .ok();
    bob.run(&["init", "--name", "bob", "--relay", &urls]).ok();
    let token = alice.run(&["invite"]).ok().stdout.trim().to_owned();
    bob.run(&["accept", &token]).ok();

    let attempts = AtomicUsize::new(0);
    let mut sent: HashMap<String, String> = HashMap::new();
    for n in 0..MESSAGES {
        if n == MESSAGES / 4 {
            node_a.signal("-KILL");
            node_a.wait();
        }
        let body = format!("msg-{n:05}");
        let id = send_counted(&alice, "bob", &body, &attempts, started, BUDGET);
        sent.insert(body, id);
    }
    check_every_sent_message_arrives_once(
        "cluster failover",
        &alice,
        &bob,
        &sent,
        attempts.load(Ordering::Relaxed),
        1,
        started,
        BUDGET,
    );
    assert_eq!(sent.len(), MESSAGES);
    // Both are on node B now, with nothing waiting and no error.
    for home in [&alice, &bob] {
        let status = home.api(serde_json::json!({"op": "status"}));
        let identity = &status["identities"][0];
        assert!(identity["relay_error"].is_null(), "{status}");
        assert_eq!(identity["queued"], 0, "{status}");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_, health) = runtime.block_on(http_get(node_b.addr, "/health"));
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert!(
        health["connections"].as_u64().unwrap() >= 2,
        "both daemons should be on node B: {health}"
    );
    drop(node_b);
}

#[tokio::test]
async fn a_node_whose_database_is_gone_says_so_refuses_sends_and_resumes_when_it_returns() {
    // A server of its own: this test stops it.
    let mut server =
        tokio::task::spawn_blocking(|| crate::pg_server::PgServer::start(false).unwrap())
            .await
            .unwrap();
    let url = server.create_database().unwrap();
    let mut postgres = PostgresConfig::new(url);
    postgres.check_interval = Duration::from_millis(200);
    let database = Database::Postgres(postgres);
    let relay = node(&database).await;
    let addr = relay.local_addr();
    let (alice, bob) = (new_key(), new_key());
    let (to_bob, _events) = connected_client(&relay.url(), &alice).await;
    let before: Vec<_> = (0..5).map(|_| new_id()).collect();
    for id in &before {
        to_bob
            .send(public(&bob), *id, b"before".to_vec())
            .await
            .unwrap();
    }

    let mut server = tokio::task::spawn_blocking(move || {
        server.pause();
        server
    })
    .await
    .unwrap();
    let health = eventually_health(addr, 503).await;
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert_eq!(health["database"], "unreachable", "{health}");
    assert_eq!(health["backend"], "postgres", "{health}");
    let refused = to_bob
        .send(public(&bob), new_id(), b"during".to_vec())
        .await;
    match refused {
        Err(ClientError::Rejected { code, message, .. }) => {
            assert_eq!(code, ErrorCode::Internal);
            assert!(message.contains("database does not answer"), "{message}");
        }
        other => panic!("a send with the database gone must be refused, got {other:?}"),
    }

    let server = tokio::task::spawn_blocking(move || {
        server.resume().unwrap();
        server
    })
    .await
    .unwrap();
    eventually_health(addr, 200).await;
    // The client may have been cut off while the database was gone; a
    // fresh send works either way.
    let after = new_id();
    let (to_bob, _events) = connected_client(&relay.url(), &alice).await;
    to_bob
        .send(public(&bob), after, b"after".to_vec())
        .await
        .unwrap();
    let (bob_client, mut at_bob) = connected_client(&relay.url(), &bob).await;
    for id in before.iter().chain([&after]) {
        let envelope = next_envelope(&mut at_bob).await;
        assert_eq!(envelope.id, *id);
        bob_client.ack(envelope.id).await.unwrap();
    }
    assert_no_envelope(&mut at_bob, Duration::from_millis(300)).await;
    drop((to_bob, bob_client));
    relay.shutdown().await;
    drop(server);
}

/// `/health` once it answers with HTTP `status` (within [`WAIT`] plus the
/// store's timeouts).
async fn eventually_health(addr: std::net::SocketAddr, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = http_get(addr, "/health").await;
        if got == status {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {got} ({body}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database name of a PostgreSQL `database`'s URL.
fn database_name(database: &Database) -> String {
    match database {
        Database::Postgres(config) => config.url().rsplit('/').next().unwrap().to_owned(),
        Database::Sqlite(_) => unreachable!(),
    }
}

#[tokio::test]
async fn a_lost_notification_or_listener_delays_a_delivery_by_one_check_not_forever() {
    let database = tokio::task::spawn_blocking(postgres_database)
        .await
        .unwrap();
    let name = database_name(&database);
    let Database::Postgres(mut config) = database else {
        unreachable!()
    };
    config.check_interval = Duration::from_millis(200);
    let relay = node(&Database::Postgres(config)).await;
    let (alice, bob) = (new_key(), new_key());
    let (to_bob, _events) = connected_client(&relay.url(), &alice).await;
    let (bob_client, mut at_bob) = connected_client(&relay.url(), &bob).await;

    // Once bob's connection has read its queue (a first message through
    // it proves that) and the listener is up (it wakes everyone when it
    // connects)...
    let first = new_id();
    to_bob
        .send(public(&bob), first, b"first".to_vec())
        .await
        .unwrap();
    assert_eq!(next_envelope(&mut at_bob).await.id, first);
    bob_client.ack(first).await.unwrap();
    wait_for_metric(
        relay.local_addr(),
        "agentwire_relay_postgres_listener_connects_total 1",
    )
    .await;
    // ...an envelope another node stored, whose notification never came:
    // only the periodic check can find it.
    let id = new_id();
    let sql = format!(
        "INSERT INTO agentwire.depth (recipient, queued) VALUES ('\\x{bob}', 1);
         INSERT INTO agentwire.envelopes (recipient, id, sender, payload, received_at, expires_at)
         VALUES ('\\x{bob}', '\\x{id}', '\\x{alice}', 'unannounced', 1, 9223372036854775807)",
        bob = public(&bob).to_hex(),
        id = id.to_hex(),
        alice = public(&alice).to_hex(),
    );
    let server = postgres();
    server.psql(&name, &sql).unwrap();
    let envelope = next_envelope(&mut at_bob).await;
    assert_eq!(
        (envelope.id, envelope.payload),
        (id, b"unannounced".to_vec())
    );
    bob_client.ack(id).await.unwrap();
    let (_, metrics) = http_get(relay.local_addr(), "/metrics").await;
    let woken: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("agentwire_relay_postgres_check_wakeups_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(woken >= 1, "{metrics}");

    // The listener's connection is cut: the node reconnects it, and
    // deliveries go on.
    let cut = server
        .psql(
            &name,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND datname = current_database()",
        )
        .unwrap();
    assert_eq!(cut, "1", "one listener per node");
    wait_for_metric(
        relay.local_addr(),
        "agentwire_relay_postgres_listener_connects_total 2",
    )
    .await;
    let id = new_id();
    to_bob
        .send(public(&bob), id, b"after".to_vec())
        .await
        .unwrap();
    assert_eq!(next_envelope(&mut at_bob).await.id, id);
    drop((to_bob, bob_client));
    relay.shutdown().await;
}

#[tokio::test]
async fn nodes_starting_together_agree_and_a_newer_schema_is_refused() {
    let database = tokio::task::spawn_blocking(postgres_database)
        .await
        .unwrap();
    // Two nodes on a fresh database at once: one applies the migrations,
    // both come up with one relay id.
    let (a, b) = tokio::join!(node(&database), node(&database));
    assert_eq!(a.relay_id(), b.relay_id());
    a.shutdown().await;
    b.shutdown().await;

    // A database a newer relay has migrated is not touched.
    let name = database_name(&database);
    tokio::task::spawn_blocking(move || {
        postgres()
            .psql(
                &name,
                "INSERT INTO agentwire.schema_migrations (version) VALUES (99)",
            )
            .unwrap()
    })
    .await
    .unwrap();
    let config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), database.clone());
    let error = Relay::spawn(config)
        .await
        .err()
        .expect("a newer schema is refused");
    let text = error.to_string();
    assert!(
        text.contains("version 99") && text.contains("newer"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_skips_a_dead_node_and_init_names_it() {
    let database = tokio::task::spawn_blocking(postgres_database)
        .await
        .unwrap();
    let live = node(&database).await;
    // Nothing listens on port 1 of loopback.
    let dead = "ws://127.0.0.1:1";
    let key = new_key();
    let (client, _events) = connected_client(&format!("{dead},{}", live.url()), &key).await;
    client
        .send(
            public(&new_key()),
            new_id(),
            b"through the live node".to_vec(),
        )
        .await
        .unwrap();

    let urls = format!("{},{dead}", live.url());
    let home = TestHome::new();
    let run =
        tokio::task::spawn_blocking(move || home.run(&["init", "--name", "bot", "--relay", &urls]))
            .await
            .unwrap();
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("127.0.0.1:1"),
        "the dead node is named: {run:?}"
    );
    drop(client);
    live.shutdown().await;
}

#[test]
fn a_node_takes_what_its_url_leaves_out_from_libpq_variables() {
    let database = postgres_database();
    let name = database_name(&database);
    let home = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(agentwire_bin())
        .arg("--home")
        .arg(home.path())
        .args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--db",
            "postgres://",
        ])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", postgres().port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let startup = startup_line(&mut child);
    assert_eq!(startup["backend"], "postgres", "{startup}");
    assert_eq!(startup["db"], "postgres://", "{startup}");
    let tables = postgres()
        .psql(&name, "SELECT count(*) FROM agentwire.schema_migrations")
        .unwrap();
    assert_eq!(
        tables, "1",
        "the node set up the database the variables name"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn expiry_swept_by_either_node_reaches_senders_on_both() {
    let database = tokio::task::spawn_blocking(postgres_database)
        .await
        .unwrap();
    let Database::Postgres(mut config) = database else {
        unreachable!()
    };
    // No periodic check to fall back on: the notices must come by NOTIFY.
    config.check_interval = Duration::from_secs(600);
    let start = || {
        let mut relay = RelayConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            Database::Postgres(config.clone()),
        );
        relay.limits.envelope_ttl = Duration::from_millis(400);
        Relay::spawn(relay)
    };
    let (a, b) = (start().await.unwrap(), start().await.unwrap());
    let (alice, bob, carol) = (new_key(), new_key(), new_key());
    let (from_alice, mut at_alice) = connected_client(&a.url(), &alice).await;
    let (from_bob, mut at_bob) = connected_client(&b.url(), &bob).await;
    let (id_a, id_b) = (new_id(), new_id());
    from_alice
        .send(public(&carol), id_a, b"too late".to_vec())
        .await
        .unwrap();
    from_bob
        .send(public(&carol), id_b, b"too late".to_vec())
        .await
        .unwrap();
    // One of the nodes swept both; the other heard of it.
    for (events, id) in [(&mut at_alice, id_a), (&mut at_bob, id_b)] {
        let expired = loop {
            match next_event(events).await {
                Event::Expired { id, to, .. } => break (id, to),
                _ => continue,
            }
        };
        assert_eq!(expired, (id, public(&carol)));
    }
    drop((from_alice, from_bob));
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn urls_that_lead_to_different_relays_are_reported_not_silently_split() {
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Two separate relays (each its own SQLite file), not one cluster.
    let mut a = RelayProcess::spawn(&home_a.path().join("home"), "127.0.0.1:0", &[]);
    let b = RelayProcess::spawn(&home_b.path().join("home"), "127.0.0.1:0", &[]);
    let alice = TestHome::new();
    alice
        .run(&[
            "init",
            "--name",
            "alice",
            "--relay",
            &format!("{},{}", a.url, b.url),
        ])
        .ok();
    // Once the daemon is on the first relay, that relay dies.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let on_a = eventually(|| {
        // Two hellos: init's check of the relay, then the daemon's link.
        let (_, metrics) = runtime.block_on(http_get(a.addr, "/metrics"));
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("agentwire_relay_frames_in_total{type=\"hello\"} "))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|hellos| hellos >= 2)
    });
    assert!(on_a, "the daemon never connected to the first relay");
    a.signal("-KILL");
    a.wait();
    let reported = eventually(|| {
        let status = alice.api(serde_json::json!({"op": "status"}));
        status["identities"][0]["relay_error"]
            .as_str()
            .is_some_and(|error| error.contains("lead to different relays"))
    });
    assert!(
        reported,
        "{}",
        alice.api(serde_json::json!({"op": "status"}))
    );
    drop(b);
}

/// Waits (at most [`WAIT`]) until the relay's `/metrics` has `line`.
async fn wait_for_metric(addr: std::net::SocketAddr, line: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, metrics) = http_get(addr, "/metrics").await;
        if metrics.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{line}` in {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_speaks_tls_to_its_database_and_verifies_it() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let server = {
        let (cert_pem, key_pem) = (cert_pem.clone(), key_pem.clone());
        tokio::task::spawn_blocking(move || {
            crate::pg_server::PgServer::start_with(false, Some((&cert_pem, &key_pem))).unwrap()
        })
        .await
        .unwrap()
    };
    let name = server
        .create_database()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert_pem).unwrap();
    let url = |query: &str| {
        format!(
            "postgres://postgres@localhost:{}/{name}?{query}",
            server.port()
        )
    };
    let start = |url: String| {
        Relay::spawn(RelayConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            Database::Postgres(PostgresConfig::new(url)),
        ))
    };

    // A certificate nobody vouches for is refused, not used.
    let refused = start(url("sslmode=verify-full")).await.err();
    assert!(refused.is_some(), "an unverified database was used");

    // With its root given, every connection of the node is TLS.
    let relay = start(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.display()
    )))
    .await
    .unwrap();
    relay_still_serves(&relay).await;
    let plain = tokio::task::spawn_blocking(move || {
        server
            .psql(
                &name,
                "SELECT count(*) FILTER (WHERE s.ssl) || ' ' || count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = current_database() AND a.application_name = 'agentwire-relay'",
            )
            .unwrap()
    })
    .await
    .unwrap();
    let (tls, plain) = plain.split_once(' ').unwrap();
    assert!(
        tls.parse::<u32>().unwrap() >= 2,
        "the pool and the listener: {tls}"
    );
    assert_eq!(plain, "0", "a connection of the node is in the clear");
    relay.shutdown().await;
}

/// A fresh pair of clients exchanges an envelope through `relay`.
async fn relay_still_serves(relay: &Relay) {
    let (alice, bob) = (new_key(), new_key());
    let (to_bob, _events) = connected_client(&relay.url(), &alice).await;
    let (bob_client, mut at_bob) = connected_client(&relay.url(), &bob).await;
    let id = new_id();
    to_bob
        .send(public(&bob), id, b"sealed".to_vec())
        .await
        .unwrap();
    assert_eq!(next_envelope(&mut at_bob).await.id, id);
    bob_client.ack(id).await.unwrap();
}
