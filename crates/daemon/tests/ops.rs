//! Every operation of the daemon, in process: daemons started with
//! `DaemonHandle` and called through `DaemonClient::InProcess` (no socket, no
//! JSON, no child process), with a relay on 127.0.0.1 port 0 in the same
//! process where two homes must meet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use agentwire_daemon::api::{
    Accept, Ack, Cancel, Chunks, Configure, ContactState, Contacts, DeliveryState, Discover,
    ErrorCode, Event, Inbox, Init, Invite, Kind, Permit, Priority, Recv, Remove, Rename,
    SendMessage, SendOutcome, Sent, SetCard, State, Status, Stop, Stream, Subscribe, Task,
    TaskRole, TaskState, Tasks, UpdateTask, Via, Whoami,
};
use agentwire_daemon::{DaemonClient, DaemonHandle, Home};

/// A home in a temporary directory with its daemon running in process.
struct TestDaemon {
    handle: DaemonHandle,
    client: DaemonClient,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    async fn start() -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(&dir.path().join("h"))).unwrap();
        let handle = DaemonHandle::spawn(home).await.unwrap();
        let client = handle.client();
        TestDaemon {
            handle,
            client,
            _dir: dir,
        }
    }

    /// Creates an identity, on `relay` if given (checked first).
    async fn init(&self, name: &str, relay: Option<&str>) {
        self.client
            .call(Init {
                name: Some(name.into()),
                relay: relay.map(str::to_owned),
                ..Init::default()
            })
            .await
            .unwrap();
    }

    /// Creates an identity on a relay that is not checked (it may be down).
    async fn init_unchecked(&self, name: &str, relay: &str) {
        self.client
            .call(Init {
                name: Some(name.into()),
                relay: Some(relay.into()),
                no_check: true,
                ..Init::default()
            })
            .await
            .unwrap();
    }

    async fn send(&self, from: &str, to: &str, body: &str) -> String {
        let sent = self
            .client
            .call(SendMessage {
                identity: Some(from.into()),
                to: to.into(),
                body: body.into(),
                ..SendMessage::default()
            })
            .await
            .unwrap();
        sent.id().to_owned()
    }

    async fn recv(&self, who: &str, wait: Duration) -> Vec<String> {
        let got = self
            .client
            .call(Recv {
                identity: Some(who.into()),
                wait_ms: Some(u64::try_from(wait.as_millis()).unwrap()),
                ..Recv::default()
            })
            .await
            .unwrap();
        got.messages.into_iter().map(|m| m.body).collect()
    }
}

/// A relay on 127.0.0.1, its URL, and the directory of its database.
async fn relay() -> (agentwire_relay::Relay, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let relay = agentwire_relay::Relay::spawn(agentwire_relay::RelayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("relay.db"),
    ))
    .await
    .unwrap();
    let url = relay.url();
    (relay, url, dir)
}

/// Two identities of one home ("a" and "b"), contacts of each other.
async fn siblings() -> TestDaemon {
    let daemon = TestDaemon::start().await;
    daemon.init("a", None).await;
    daemon.init("b", None).await;
    daemon
}

fn refusal<T: std::fmt::Debug>(
    result: Result<T, agentwire_daemon::ClientError>,
) -> agentwire_daemon::api::ApiError {
    result.unwrap_err().refusal().cloned().expect("a refusal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_whoami_status_and_contacts() {
    let daemon = TestDaemon::start().await;
    let none = refusal(daemon.client.call(Whoami::default()).await);
    assert_eq!(none.code, ErrorCode::NotInitialized);
    daemon.init("a", None).await;
    daemon.init("b", None).await;
    let taken = refusal(
        daemon
            .client
            .call(Init {
                name: Some("a".into()),
                ..Init::default()
            })
            .await,
    );
    assert_eq!(taken.code, ErrorCode::NameTaken);
    let me = daemon.client.call(Whoami::default()).await.unwrap();
    assert_eq!(me.name, "a", "the first identity is the default");
    let status = daemon.client.call(Status {}).await.unwrap();
    assert!(status.running && status.local_relay);
    assert_eq!(status.identities.len(), 2);
    let contacts = daemon
        .client
        .call(Contacts {
            identity: Some("b".into()),
        })
        .await
        .unwrap();
    assert_eq!(contacts.contacts.len(), 1);
    assert_eq!(contacts.contacts[0].name, "a");
    assert_eq!(contacts.contacts[0].via, Via::Sibling);
    assert_eq!(contacts.contacts[0].state, ContactState::Active);
    daemon.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_remove_a_contact() {
    let daemon = siblings().await;
    // Sent first, so that the daemon holds the contacts in memory: each
    // change must show at once.
    daemon.send("a", "b", "before").await;
    let renamed = daemon
        .client
        .call(Rename {
            identity: Some("a".into()),
            peer: "b".into(),
            new_name: "builder".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        (renamed.renamed.as_str(), renamed.to.as_str()),
        ("b", "builder")
    );
    let gone = refusal(
        daemon
            .client
            .call(SendMessage {
                identity: Some("a".into()),
                to: "b".into(),
                body: "x".into(),
                ..SendMessage::default()
            })
            .await,
    );
    assert_eq!(gone.code, ErrorCode::UnknownPeer);
    daemon.send("a", "builder", "hi").await;
    let removed = daemon
        .client
        .call(Remove {
            identity: Some("a".into()),
            peer: "builder".into(),
        })
        .await
        .unwrap();
    assert_eq!(removed.removed, "builder");
    let gone = refusal(
        daemon
            .client
            .call(SendMessage {
                identity: Some("a".into()),
                to: "builder".into(),
                body: "x".into(),
                ..SendMessage::default()
            })
            .await,
    );
    assert_eq!(gone.code, ErrorCode::UnknownPeer);
    let contacts = daemon
        .client
        .call(Contacts {
            identity: Some("a".into()),
        })
        .await
        .unwrap();
    assert!(contacts.contacts.is_empty());
    daemon.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_state_sent_inbox_recv_and_ack() {
    let daemon = siblings().await;
    let first = daemon.send("a", "b", "one").await;
    let urgent = daemon
        .client
        .call(SendMessage {
            identity: Some("a".into()),
            to: "b".into(),
            body: "two".into(),
            kind: Some(Kind::Task),
            priority: Some(Priority::Urgent),
            wait: Some(DeliveryState::Delivered),
            wait_ms: Some(10_000),
            ..SendMessage::default()
        })
        .await
        .unwrap();
    let SendOutcome::Waited(waited) = urgent else {
        panic!("a send with a wait answers with its state")
    };
    assert!(waited.reached, "{waited:?}");
    let state = daemon
        .client
        .call(State {
            identity: Some("a".into()),
            id: first.clone(),
            wait: Some(DeliveryState::Delivered),
            wait_ms: Some(10_000),
        })
        .await
        .unwrap();
    assert_eq!(state.state, DeliveryState::Delivered);
    // Both are at b: inbox shows them (urgent first) and takes nothing.
    let inbox = daemon
        .client
        .call(Inbox {
            identity: Some("b".into()),
            ..Inbox::default()
        })
        .await
        .unwrap();
    let bodies: Vec<&str> = inbox.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["two", "one"]);
    assert_eq!(inbox.unread, Some(2));
    assert_eq!(inbox.messages[0].kind, Kind::Task);
    assert!(inbox.messages[0].from.verified);
    // Ack takes the one named; recv takes the rest.
    let acked = daemon
        .client
        .call(Ack {
            identity: Some("b".into()),
            ids: vec![inbox.messages[0].id.clone()],
        })
        .await
        .unwrap();
    assert_eq!(acked.acked, [inbox.messages[0].id.clone()]);
    assert_eq!(daemon.recv("b", Duration::ZERO).await, ["one"]);
    assert!(daemon.recv("b", Duration::ZERO).await.is_empty());
    // The sender sees both read, newest first in `sent`.
    let read = daemon
        .client
        .call(State {
            identity: Some("a".into()),
            id: first,
            wait: Some(DeliveryState::Read),
            wait_ms: Some(10_000),
        })
        .await
        .unwrap();
    assert_eq!(read.state, DeliveryState::Read);
    let sent = daemon
        .client
        .call(Sent {
            identity: Some("a".into()),
            max: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(sent.messages.len(), 2);
    assert_eq!(sent.messages[1].id, read.id);
    // Each keeps when it reached each state, in order.
    for message in &sent.messages {
        let times = [
            Some(message.sent_at_ms),
            message.relayed_at_ms,
            message.delivered_at_ms,
            message.read_at_ms,
        ];
        let times: Vec<u64> = times.map(|t| t.expect("every state reached")).into();
        assert!(times.is_sorted(), "{message:?}");
        assert_eq!(message.updated_at_ms, times[3], "{message:?}");
    }
    daemon.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_shows_messages_once_and_state_changes() {
    let daemon = siblings().await;
    let before = daemon.send("a", "b", "waiting already").await;
    let mut events = daemon
        .client
        .subscribe(Subscribe {
            identity: Some("b".into()),
        })
        .await
        .unwrap();
    let mut to_a = daemon
        .client
        .subscribe(Subscribe {
            identity: Some("a".into()),
        })
        .await
        .unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ready, Some(Event::Ready { .. })), "{ready:?}");
    let mut bodies = Vec::new();
    daemon.send("a", "b", "new").await;
    while bodies.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event in time")
            .unwrap();
        if let Some(Event::Message { message }) = event {
            bodies.push(message.body);
        }
    }
    assert_eq!(bodies, ["waiting already", "new"]);
    // a sees its first message move on.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), to_a.next())
            .await
            .expect("a state event in time")
            .unwrap();
        if let Some(Event::State(sent)) = event
            && sent.id == before
            && sent.state == DeliveryState::Delivered
        {
            break;
        }
    }
    daemon.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_and_accept_across_two_homes_and_a_relay() {
    let (relay, url, _dir) = relay().await;
    let (alice, bob) = (TestDaemon::start().await, TestDaemon::start().await);
    alice.init("alice", Some(&url)).await;
    bob.init("bob", Some(&url)).await;
    let invite = alice.client.call(Invite::default()).await.unwrap();
    assert!(invite.invite.starts_with("aw1:"));
    assert!(
        !format!("{invite:?}").contains(&invite.invite),
        "Debug hides the token"
    );
    let contact = bob
        .client
        .call(Accept {
            identity: None,
            token: invite.invite.clone(),
            name: Some("al".into()),
            wait_ms: Some(10_000),
            allow: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (contact.name.as_str(), contact.state),
        ("al", ContactState::Active)
    );
    assert_eq!(contact.via, Via::Accepted);
    // Used once: a second acceptor is told so.
    let carol = TestDaemon::start().await;
    carol.init("carol", Some(&url)).await;
    let spent = refusal(
        carol
            .client
            .call(Accept {
                identity: None,
                token: invite.invite,
                wait_ms: Some(10_000),
                ..Accept::default()
            })
            .await,
    );
    assert_eq!(spent.code, ErrorCode::InviteSpent);
    bob.send("bob", "al", "hello alice").await;
    assert_eq!(
        alice.recv("alice", Duration::from_secs(10)).await,
        ["hello alice"]
    );
    for daemon in [alice, bob, carol] {
        daemon.handle.shutdown().await;
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_asks_the_daemon_to_stop() {
    let daemon = siblings().await;
    let stopping = daemon.client.call(Stop {}).await.unwrap();
    assert!(stopping.stopping);
    tokio::time::timeout(Duration::from_secs(5), daemon.handle.stop_requested())
        .await
        .expect("the stop request is seen");
    daemon.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_bounded() {
    let daemon = siblings().await;
    for max in [
        0,
        agentwire_daemon::MAX_MESSAGES_PER_REQUEST + 1,
        usize::MAX,
    ] {
        let refused = refusal(
            daemon
                .client
                .call(Recv {
                    identity: Some("b".into()),
                    max: Some(max),
                    ..Recv::default()
                })
                .await,
        );
        assert_eq!(refused.code, ErrorCode::InvalidRequest, "{max}");
    }
    for max in [0, agentwire_daemon::MAX_SENT_PER_REQUEST + 1] {
        let refused = refusal(
            daemon
                .client
                .call(Sent {
                    identity: Some("a".into()),
                    max: Some(max),
                })
                .await,
        );
        assert_eq!(refused.code, ErrorCode::InvalidRequest, "{max}");
    }
    let too_many = refusal(
        daemon
            .client
            .call(Ack {
                identity: Some("b".into()),
                ids: vec!["x".into(); agentwire_daemon::MAX_MESSAGES_PER_REQUEST + 1],
            })
            .await,
    );
    assert!(too_many.message.contains("over the limit"), "{too_many:?}");
    daemon.handle.shutdown().await;
}

/// Waits run on tokio's clock, so they are tested on a paused one: a minute
/// of waiting costs no real time. The relay is out of reach (nothing listens
/// on port 9), so nothing arrives and nothing is relayed.
#[tokio::test(start_paused = true)]
async fn waits_end_at_their_deadline_and_say_what_holds_a_message_up() {
    let daemon = TestDaemon::start().await;
    daemon.init_unchecked("a", "ws://127.0.0.1:9").await;
    daemon.init("b", None).await;

    let started = tokio::time::Instant::now();
    let nothing = daemon
        .client
        .call(Recv {
            identity: Some("b".into()),
            wait_ms: Some(60_000),
            ..Recv::default()
        })
        .await
        .unwrap();
    assert!(nothing.messages.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(60));

    let started = tokio::time::Instant::now();
    let held = daemon
        .client
        .call(SendMessage {
            identity: Some("a".into()),
            to: "b".into(),
            body: "stuck".into(),
            wait: Some(DeliveryState::Relayed),
            wait_ms: Some(30_000),
            ..SendMessage::default()
        })
        .await
        .unwrap();
    let SendOutcome::Waited(waited) = held else {
        panic!("send --wait answered without waiting: {held:?}")
    };
    assert!(!waited.reached);
    assert_eq!(waited.sent.state, DeliveryState::Queued);
    let why = waited.held_up_by.expect("what holds it up");
    assert!(why.contains("relay"), "{why}");
    assert!(started.elapsed() >= Duration::from_secs(30));

    // The link kept retrying all along (100 ms doubling to 3 s): status
    // says why it is not connected.
    let status = daemon.client.call(Status {}).await.unwrap();
    let a = status.identities.iter().find(|i| i.name == "a").unwrap();
    assert!(a.relay_error.is_some(), "{status:?}");
    assert_eq!(a.queued, 1);
    daemon.handle.shutdown().await;
}

/// The first identity fixes the home's relay, so init checks it first: a
/// relay that is not there is said to be, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_checks_the_relay_first_and_creates_nothing_when_it_does_not_answer() {
    let daemon = TestDaemon::start().await;
    let refused = refusal(
        daemon
            .client
            .call(Init {
                name: Some("a".into()),
                relay: Some("ws://127.0.0.1:9".into()),
                ..Init::default()
            })
            .await,
    );
    assert_eq!(refused.code, ErrorCode::RelayUnreachable);
    assert!(
        refused.message.contains("nothing listens there")
            && refused.message.contains("nothing was created"),
        "{}",
        refused.message
    );
    let none = refusal(daemon.client.call(Whoami::default()).await);
    assert_eq!(none.code, ErrorCode::NotInitialized);
    daemon.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_shows_and_changes_the_relay_settings() {
    let daemon = siblings().await;
    let shown = daemon.client.call(Configure::default()).await.unwrap();
    assert_eq!(
        (shown.relay, shown.relay_token, shown.changed),
        (None, false, false)
    );
    // The daemon's own relay takes no token.
    let refused = refusal(
        daemon
            .client
            .call(Configure {
                relay_token: Some("t".into()),
                ..Configure::default()
            })
            .await,
    );
    assert_eq!(refused.code, ErrorCode::InvalidRequest);
    // A relay that does not answer is not kept, unless asked to.
    let refused = refusal(
        daemon
            .client
            .call(Configure {
                relay: Some("ws://127.0.0.1:9".into()),
                ..Configure::default()
            })
            .await,
    );
    assert_eq!(refused.code, ErrorCode::RelayUnreachable);
    assert_eq!(
        daemon
            .client
            .call(Configure::default())
            .await
            .unwrap()
            .relay,
        None
    );
    let kept = daemon
        .client
        .call(Configure {
            relay: Some("ws://127.0.0.1:9".into()),
            relay_token: Some("t".into()),
            no_check: true,
            ..Configure::default()
        })
        .await
        .unwrap();
    assert!(kept.changed && kept.relay_token);
    assert_eq!(kept.relay.as_deref(), Some("ws://127.0.0.1:9"));
    let cleared = daemon
        .client
        .call(Configure {
            clear_relay_token: true,
            no_check: true,
            ..Configure::default()
        })
        .await
        .unwrap();
    assert!(!cleared.relay_token);
    daemon.handle.shutdown().await;
}

/// Polls `check` until it holds, for up to 10 s.
async fn until<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

impl TestDaemon {
    /// Removes the default identity's contact `peer`; whether it was told.
    async fn remove(&self, peer: &str) -> bool {
        let removed = self.client.call(Remove {
            identity: None,
            peer: peer.into(),
        });
        removed.await.unwrap().told
    }

    /// `who`'s contact `peer`, if it has one.
    async fn contact(&self, who: &str, peer: &str) -> Option<agentwire_daemon::api::ContactView> {
        let list = self
            .client
            .call(Contacts {
                identity: Some(who.into()),
            })
            .await
            .unwrap();
        list.contacts.into_iter().find(|c| c.name == peer)
    }

    async fn state_of(&self, who: &str, id: &str) -> DeliveryState {
        self.client
            .call(State {
                identity: Some(who.into()),
                id: id.into(),
                ..State::default()
            })
            .await
            .unwrap()
            .state
    }

    /// Pairs `who` (inviting) with `other`'s `other_name` (accepting).
    async fn invite_to(&self, who: &str, other: &TestDaemon, other_name: &str) {
        let invite = self
            .client
            .call(Invite {
                identity: Some(who.into()),
                ..Invite::default()
            })
            .await
            .unwrap();
        let contact = other
            .client
            .call(Accept {
                identity: Some(other_name.into()),
                token: invite.invite,
                wait_ms: Some(10_000),
                ..Accept::default()
            })
            .await
            .unwrap();
        assert_eq!(contact.state, ContactState::Active, "{contact:?}");
    }

    /// `who` changes what its contact `peer` may send.
    async fn permit(&self, who: &str, peer: &str, permissions: &str, allow: bool) -> Vec<String> {
        self.client
            .call(Permit {
                identity: Some(who.into()),
                peer: peer.into(),
                permissions: vec![permissions.into()],
                allow,
            })
            .await
            .unwrap()
            .permissions
    }
}

/// Permissions are the receiving daemon's: an invite for chat only makes a
/// contact whose tasks are answered `rejected` with the reason and never
/// stored; `deny` and `allow` change it at once; the inviter names the new
/// contact and is told when the invite is redeemed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_enforced_by_the_receiving_daemon() {
    let (relay, url, _dir) = relay().await;
    let (alice, bob) = (TestDaemon::start().await, TestDaemon::start().await);
    alice.init("alice", Some(&url)).await;
    bob.init("bob", Some(&url)).await;
    let mut events = alice
        .client
        .subscribe(Subscribe {
            identity: Some("alice".into()),
        })
        .await
        .unwrap();

    // Names that look like keys are refused as petnames.
    let key_like = refusal(
        alice
            .client
            .call(Invite {
                for_name: Some("c0ffee".into()),
                ..Invite::default()
            })
            .await,
    );
    assert_eq!(key_like.code, ErrorCode::BadName, "{key_like:?}");
    let unknown = refusal(
        alice
            .client
            .call(Invite {
                allow: Some(vec!["chat".into(), "admin".into()]),
                ..Invite::default()
            })
            .await,
    );
    assert!(unknown.message.contains("\"admin\""), "{unknown:?}");

    let invite = alice
        .client
        .call(Invite {
            allow: Some(vec!["chat".into()]),
            for_name: Some("robert".into()),
            ..Invite::default()
        })
        .await
        .unwrap();
    assert_eq!(invite.permissions, ["chat"]);
    assert_eq!(invite.for_name.as_deref(), Some("robert"));
    let accepted = bob
        .client
        .call(Accept {
            token: invite.invite,
            wait_ms: Some(10_000),
            ..Accept::default()
        })
        .await
        .unwrap();
    assert_eq!(accepted.state, ContactState::Active);
    assert_eq!(accepted.permissions, ["chat", "task", "file"]);
    // Alice is told, under the name she chose (bob suggested "bob").
    let told = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Ok(Some(Event::Contact(contact)))) => break contact,
            Ok(Ok(Some(_))) => continue,
            other => panic!("no contact event: {other:?}"),
        }
    };
    assert_eq!(told.name, "robert");
    assert_eq!(told.permissions, ["chat"]);
    let status = alice.client.call(Status {}).await.unwrap();
    assert_eq!(status.invites_redeemed, 1);

    // A task from a chat-only contact: rejected with the reason, never stored.
    let task = bob.ask("bob", "alice", "rm -rf /").await;
    let answered = bob
        .client
        .call(Task {
            identity: Some("bob".into()),
            id: task.clone(),
            wait_ms: Some(10_000),
        })
        .await
        .unwrap();
    assert_eq!(answered.state, TaskState::Rejected, "{answered:?}");
    let why = answered.detail.unwrap_or_default();
    assert!(why.contains("permission \"task\""), "{why}");
    assert_eq!(bob.state_of("bob", &task).await, DeliveryState::Failed);
    let chat = bob.send("bob", "alice", "hello").await;
    assert_eq!(
        alice.recv("alice", Duration::from_secs(10)).await,
        ["hello"]
    );
    assert!(until(|| async { bob.state_of("bob", &chat).await == DeliveryState::Read }).await);
    let given = alice
        .client
        .call(Tasks {
            identity: None,
            max: None,
        })
        .await
        .unwrap();
    assert!(given.tasks.is_empty(), "{given:?}");
    assert_eq!(
        alice
            .client
            .call(Status {})
            .await
            .unwrap()
            .refused_not_permitted,
        1
    );

    // Denied chat: refused too; allowed tasks: they arrive.
    assert!(
        alice
            .permit("alice", "robert", "chat", false)
            .await
            .is_empty()
    );
    let muted = bob.send("bob", "alice", "still there?").await;
    assert!(until(|| async { bob.state_of("bob", &muted).await == DeliveryState::Failed }).await);
    let refused = bob
        .client
        .call(State {
            identity: Some("bob".into()),
            id: muted.clone(),
            ..State::default()
        })
        .await
        .unwrap();
    assert!(
        refused
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("permission \"chat\"")),
        "{refused:?}"
    );
    assert_eq!(
        alice.permit("alice", "robert", "task", true).await,
        ["task"]
    );
    let allowed = bob.ask("bob", "alice", "run the tests").await;
    assert!(
        until(|| async {
            alice
                .client
                .call(Tasks {
                    identity: None,
                    max: None,
                })
                .await
                .unwrap()
                .tasks
                .iter()
                .any(|t| t.id == allowed)
        })
        .await
    );
    assert!(alice.recv("alice", Duration::ZERO).await.len() == 1);
    let renamed = refusal(
        alice
            .client
            .call(Rename {
                identity: None,
                peer: "robert".into(),
                new_name: "abcd12".into(),
            })
            .await,
    );
    assert_eq!(renamed.code, ErrorCode::BadName);
    drop(relay);
}

/// `contacts remove` tells the other side: it lists the remover as
/// `removed`, fails what had not reached it, refuses new sends, and a new
/// invite either way pairs them again under the names they had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_tells_the_contact_and_a_new_invite_pairs_again() {
    let (relay, url, _dir) = relay().await;
    let (alice, bob) = (TestDaemon::start().await, TestDaemon::start().await);
    alice.init("alice", Some(&url)).await;
    bob.init("bob", Some(&url)).await;
    alice.invite_to("alice", &bob, "bob").await;
    let delivered = bob.send("bob", "alice", "before").await;
    assert_eq!(
        alice.recv("alice", Duration::from_secs(10)).await,
        ["before"]
    );
    alice.send("alice", "bob", "unread at bob").await;
    assert!(until(|| async { bob.state_of("bob", &delivered).await == DeliveryState::Read }).await);

    // Alice goes offline (her relay is out of reach) and bob writes to her:
    // the message waits at the relay.
    let offline = |relay: &str| Configure {
        relay: Some(relay.into()),
        no_check: true,
        ..Configure::default()
    };
    alice
        .client
        .call(offline("ws://127.0.0.1:9"))
        .await
        .unwrap();
    let lost = bob.send("bob", "alice", "never read").await;
    assert!(until(|| async { bob.state_of("bob", &lost).await == DeliveryState::Relayed }).await);
    let removed = alice
        .client
        .call(Remove {
            identity: None,
            peer: "bob".into(),
        })
        .await
        .unwrap();
    assert_eq!((removed.removed.as_str(), removed.told), ("bob", true));
    alice.client.call(offline(&url)).await.unwrap();

    // Bob learns it: alice is `removed`, his message to her failed, the one
    // she read stays read, and what she sent him stays unread.
    assert!(
        until(|| async {
            bob.contact("bob", "alice").await.map(|c| c.state) == Some(ContactState::Removed)
        })
        .await
    );
    assert!(until(|| async { bob.state_of("bob", &lost).await == DeliveryState::Failed }).await);
    assert_eq!(bob.state_of("bob", &delivered).await, DeliveryState::Read);
    let refused = refusal(
        bob.client
            .call(SendMessage {
                to: "alice".into(),
                body: "hello?".into(),
                ..SendMessage::default()
            })
            .await,
    );
    assert_eq!(refused.code, ErrorCode::ContactRemoved, "{refused:?}");
    assert!(refused.message.contains("invite"), "{refused:?}");
    assert_eq!(bob.recv("bob", Duration::ZERO).await, ["unread at bob"]);
    // Bob's "never read" reached alice's daemon after she removed him: dropped.
    assert!(
        alice
            .recv("alice", Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert!(alice.contact("alice", "bob").await.is_none());

    // The remover invites again: bob's entry for her comes back to life.
    alice.invite_to("alice", &bob, "bob").await;
    assert_eq!(
        bob.contact("bob", "alice").await.map(|c| c.state),
        Some(ContactState::Active)
    );
    bob.send("bob", "alice", "again").await;
    assert_eq!(
        alice.recv("alice", Duration::from_secs(10)).await,
        ["again"]
    );

    // Now bob removes her, and she, the removed one, invites him back.
    let removed = bob
        .client
        .call(Remove {
            identity: None,
            peer: "alice".into(),
        })
        .await
        .unwrap();
    assert!(removed.told);
    assert!(
        until(|| async {
            alice.contact("alice", "bob").await.map(|c| c.state) == Some(ContactState::Removed)
        })
        .await
    );
    alice.invite_to("alice", &bob, "bob").await;
    assert!(
        until(|| async {
            alice.contact("alice", "bob").await.map(|c| c.state) == Some(ContactState::Active)
        })
        .await
    );
    alice.send("alice", "bob", "welcome back").await;
    assert_eq!(
        bob.recv("bob", Duration::from_secs(10)).await,
        ["welcome back"]
    );
    // Removing a contact that removed you tells nobody: there is no session.
    assert!(alice.remove("bob").await);
    assert!(
        until(|| async {
            bob.contact("bob", "alice").await.map(|c| c.state) == Some(ContactState::Removed)
        })
        .await
    );
    assert!(!bob.remove("alice").await);
    assert!(bob.contact("bob", "alice").await.is_none());
    for daemon in [alice, bob] {
        daemon.handle.shutdown().await;
    }
    relay.shutdown().await;
}

impl TestDaemon {
    /// `who` asks `to` to do `text`; the task id.
    async fn ask(&self, who: &str, to: &str, text: &str) -> String {
        let sent = self
            .client
            .call(SendMessage {
                identity: Some(who.into()),
                to: to.into(),
                body: text.into(),
                kind: Some(Kind::Task),
                ..SendMessage::default()
            })
            .await
            .unwrap();
        sent.id().to_owned()
    }

    async fn task(&self, who: &str, id: &str) -> agentwire_daemon::api::TaskView {
        self.client
            .call(Task {
                identity: Some(who.into()),
                id: id.into(),
                wait_ms: None,
            })
            .await
            .unwrap()
    }

    async fn report(
        &self,
        who: &str,
        id: &str,
        state: TaskState,
        detail: Option<&str>,
        result: Option<&str>,
    ) -> Result<agentwire_daemon::api::TaskView, agentwire_daemon::ClientError> {
        self.client
            .call(UpdateTask {
                identity: Some(who.into()),
                id: id.into(),
                state,
                detail: detail.map(str::to_owned),
                result: result.map(str::to_owned),
            })
            .await
    }
}

/// A task's life on both sides: submitted, working, completed with its
/// result; canceled by the requester; rejected with a reason; and the
/// moves each side may not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_move_through_their_states_on_both_sides() {
    let daemon = siblings().await;
    let mut a_events = daemon
        .client
        .subscribe(Subscribe {
            identity: Some("a".into()),
        })
        .await
        .unwrap();
    let id = daemon.ask("a", "b", "run the tests").await;
    let asked = daemon.task("a", &id).await;
    assert_eq!(
        (asked.role, asked.state),
        (TaskRole::Asked, TaskState::Submitted)
    );
    assert_eq!(asked.summary, "run the tests");
    assert!(
        until(|| async {
            daemon
                .client
                .call(Tasks {
                    identity: Some("b".into()),
                    max: None,
                })
                .await
                .unwrap()
                .tasks
                .iter()
                .any(|t| t.id == id && t.role == TaskRole::Given)
        })
        .await
    );
    // The worker reports; the requester sees each state.
    daemon
        .report("b", &id, TaskState::Working, None, None)
        .await
        .unwrap();
    assert!(until(|| async { daemon.task("a", &id).await.state == TaskState::Working }).await);
    let done = daemon
        .report("b", &id, TaskState::Completed, None, Some("all 197 passed"))
        .await
        .unwrap();
    assert_eq!(done.state, TaskState::Completed);
    let finished = daemon
        .client
        .call(Task {
            identity: Some("a".into()),
            id: id.clone(),
            wait_ms: Some(10_000),
        })
        .await
        .unwrap();
    assert_eq!(finished.state, TaskState::Completed, "{finished:?}");
    let result = finished.result.expect("a completed task names its result");
    let taken = daemon
        .client
        .call(Recv {
            identity: Some("a".into()),
            ids: vec![result.clone()],
            ..Recv::default()
        })
        .await
        .unwrap();
    assert_eq!(taken.messages[0].body, "all 197 passed");
    assert_eq!(taken.messages[0].kind, Kind::Result);
    assert_eq!(taken.messages[0].reply_to.as_deref(), Some(id.as_str()));
    // Final: nothing moves it any more.
    let refused = refusal(
        daemon
            .report("b", &id, TaskState::Failed, Some("late"), None)
            .await,
    );
    assert!(refused.message.contains("completed"), "{refused:?}");

    // Canceled by the requester: the worker sees it, and cannot finish it.
    let second = daemon.ask("a", "b", "a long job").await;
    assert!(
        until(|| async {
            daemon
                .report("b", &second, TaskState::Working, None, None)
                .await
                .is_ok()
        })
        .await
    );
    let canceled = daemon
        .client
        .call(Cancel {
            identity: Some("a".into()),
            id: second.clone(),
        })
        .await
        .unwrap();
    assert_eq!(canceled.state, TaskState::Canceled);
    assert!(until(|| async { daemon.task("b", &second).await.state == TaskState::Canceled }).await);
    assert!(
        daemon
            .report(
                "b",
                &second,
                TaskState::Completed,
                None,
                Some("done anyway")
            )
            .await
            .is_err()
    );

    // Rejected, with the reason.
    let third = daemon.ask("a", "b", "delete production").await;
    assert!(
        until(|| async {
            daemon
                .report(
                    "b",
                    &third,
                    TaskState::Rejected,
                    Some("not allowed here"),
                    None,
                )
                .await
                .is_ok()
        })
        .await
    );
    let rejected = daemon
        .client
        .call(Task {
            identity: Some("a".into()),
            id: third.clone(),
            wait_ms: Some(10_000),
        })
        .await
        .unwrap();
    assert_eq!(rejected.state, TaskState::Rejected);
    assert_eq!(rejected.detail.as_deref(), Some("not allowed here"));

    // Each side makes only its own moves.
    let own = refusal(
        daemon
            .report("a", &third, TaskState::Working, None, None)
            .await,
    );
    assert!(own.message.contains("only its worker"), "{own:?}");
    let fourth = daemon.ask("a", "b", "anything").await;
    assert!(
        until(|| async {
            daemon
                .report("b", &fourth, TaskState::Working, None, None)
                .await
                .is_ok()
        })
        .await
    );
    let not_theirs = refusal(
        daemon
            .client
            .call(Cancel {
                identity: Some("b".into()),
                id: fourth.clone(),
            })
            .await,
    );
    assert!(
        not_theirs.message.contains("given to you"),
        "{not_theirs:?}"
    );
    let no_result = refusal(
        daemon
            .report("b", &fourth, TaskState::Completed, None, None)
            .await,
    );
    assert!(no_result.message.contains("result"), "{no_result:?}");
    let unknown = refusal(
        daemon
            .report(
                "b",
                "01a215a5-6c1e-7f7e-9d1a-2b3c4d5e6f70",
                TaskState::Working,
                None,
                None,
            )
            .await,
    );
    assert_eq!(unknown.code, ErrorCode::UnknownMessage);

    // The requester's subscription saw the task move.
    let mut seen = Vec::new();
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(Duration::from_millis(200), a_events.next()).await
    {
        if let Event::Task(task) = event
            && task.id == id
        {
            seen.push(task.state);
        }
    }
    assert_eq!(
        seen,
        [
            TaskState::Submitted,
            TaskState::Working,
            TaskState::Completed
        ]
    );
    daemon.handle.shutdown().await;
}

/// The worker streams pieces of a task's output; the requester reads them
/// in order, from any point, waiting for the next; only the worker of a
/// running task streams, a piece at most 16 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_output_reaches_the_requester_in_order() {
    let daemon = siblings().await;
    let id = daemon.ask("a", "b", "count").await;
    assert!(
        until(|| async {
            daemon
                .report("b", &id, TaskState::Working, None, None)
                .await
                .is_ok()
        })
        .await
    );
    let stream = |who: &str, text: &str| Stream {
        identity: Some(who.into()),
        id: id.clone(),
        text: text.into(),
    };
    for (n, text) in ["one\n", "two\n", "three"].into_iter().enumerate() {
        let streamed = daemon.client.call(stream("b", text)).await.unwrap();
        assert_eq!(streamed.seq, n as u32);
    }
    let chunks = |after: Option<u32>| Chunks {
        identity: Some("a".into()),
        id: id.clone(),
        after,
        wait_ms: Some(10_000),
    };
    let mut got = Vec::new();
    while got.len() < 3 {
        let after = got.last().map(|(seq, _)| *seq);
        let list = daemon.client.call(chunks(after)).await.unwrap();
        got.extend(list.chunks.into_iter().map(|c| (c.seq, c.text)));
    }
    assert_eq!(
        got,
        [
            (0, "one\n".into()),
            (1, "two\n".into()),
            (2, "three".into())
        ]
    );
    let rest = daemon.client.call(chunks(Some(1))).await.unwrap();
    assert_eq!(rest.chunks.len(), 1);
    assert_eq!(rest.task.state, TaskState::Working);

    let not_worker = refusal(daemon.client.call(stream("a", "x")).await);
    assert!(
        not_worker.message.contains("only its worker"),
        "{not_worker:?}"
    );
    let big = "x".repeat(16 * 1024 + 1);
    let too_big = refusal(daemon.client.call(stream("b", &big)).await);
    assert!(too_big.message.contains("16 KiB"), "{too_big:?}");
    daemon
        .report(
            "b",
            &id,
            TaskState::Completed,
            None,
            Some("one\ntwo\nthree"),
        )
        .await
        .unwrap();
    let after_end = refusal(daemon.client.call(stream("b", "late")).await);
    assert!(
        after_end.message.contains("nothing more streams"),
        "{after_end:?}"
    );
    daemon.handle.shutdown().await;
}

/// Cards reach contacts inside the encryption (when set, and on pairing);
/// `discover` finds contacts by capability and tells online from offline by
/// asking them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_reach_contacts_and_discover_finds_them_by_capability() {
    let (relay, url, _dir) = relay().await;
    let (alice, bob, carol) = (
        TestDaemon::start().await,
        TestDaemon::start().await,
        TestDaemon::start().await,
    );
    alice.init("alice", Some(&url)).await;
    bob.init("bob", Some(&url)).await;
    carol.init("carol", Some(&url)).await;
    let bad = refusal(
        bob.client
            .call(SetCard {
                capabilities: Some(vec!["Code Review".into()]),
                ..SetCard::default()
            })
            .await,
    );
    assert!(bad.message.contains("capability"), "{bad:?}");
    // Set before pairing: the new contact gets it when they pair.
    let set = bob
        .client
        .call(SetCard {
            name: Some("Rust reviewer".into()),
            capabilities: Some(vec!["code-review".into(), "Rust".into()]),
            takes_tasks: Some(true),
            ..SetCard::default()
        })
        .await
        .unwrap();
    assert_eq!(set.card.capabilities, ["code-review", "rust"]);
    assert!(set.sent_to.is_empty());
    alice.invite_to("alice", &bob, "bob").await;
    alice.invite_to("alice", &carol, "carol").await;
    // Carol goes away before alice ever hears from her (pairing itself is
    // no message from her session).
    carol.handle.shutdown().await;
    let discover = |capability: Option<&str>, wait_ms: u64| Discover {
        identity: None,
        capability: capability.map(str::to_owned),
        wait_ms: Some(wait_ms),
        relay: false,
    };
    let mut found = Vec::new();
    for _ in 0..100 {
        found = alice
            .client
            .call(discover(Some("code-review"), 2_000))
            .await
            .unwrap()
            .contacts;
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found[0].name, "bob");
    assert!(found[0].online);
    let card = found[0].card.clone().unwrap();
    assert_eq!(
        (card.name.as_str(), card.takes_tasks),
        ("Rust reviewer", true)
    );
    let none = alice
        .client
        .call(discover(Some("python"), 0))
        .await
        .unwrap();
    assert!(none.contacts.is_empty());

    // A change reaches the contacts that have it.
    bob.client
        .call(SetCard {
            capabilities: Some(vec!["python".into()]),
            ..SetCard::default()
        })
        .await
        .unwrap();
    assert!(
        until(|| async {
            alice
                .client
                .call(discover(Some("python"), 0))
                .await
                .unwrap()
                .contacts
                .len()
                == 1
        })
        .await
    );

    // Carol, gone, never heard from: asked, no answer, offline.
    let all = alice
        .client
        .call(discover(None, 500))
        .await
        .unwrap()
        .contacts;
    let names: Vec<(&str, bool)> = all.iter().map(|c| (c.name.as_str(), c.online)).collect();
    assert_eq!(names, [("bob", true), ("carol", false)]);
    assert!(all[1].card.is_none());
    drop(relay);
}
