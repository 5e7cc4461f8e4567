//! `agentwire connect --json`: a scripted streaming session.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

/// A running `connect --json` session.
struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    /// Every line read so far, matching or not.
    seen: Vec<Value>,
}

impl Session {
    fn start(home: &TestHome, identity: &str) -> Session {
        let mut child = Command::new(agentwire_bin())
            .arg("--home")
            .arg(home.path())
            .args(["--as", identity, "connect", "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut session = Session {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        session.expect(|v| v["event"] == "ready");
        session
    }

    fn write(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// The first line matching `wanted` (others are skipped), within 10 s.
    fn expect(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("no matching line in time");
            self.seen.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_scripted_session_sends_receives_gets_states_and_specific_errors() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    let mut b = Session::start(&home, "b");

    // A message arrives as an event.
    let sent = home.run(&["--json", "send", "b", "hello b"]).ok().json();
    let id = sent["id"].as_str().unwrap().to_owned();
    let event = b.expect(|v| v["event"] == "message");
    assert_eq!(event["message"]["id"], id.as_str());
    assert_eq!(event["message"]["body"], "hello b");
    assert_eq!(event["message"]["from"]["name"], "a");
    assert_eq!(event["message"]["from"]["verified"], true);

    // Acknowledging it consumes it, and a sees it read.
    b.write(&json!({"op": "ack", "ids": [id], "ref": "ack-1"}).to_string());
    let acked = b.expect(|v| v["ref"] == "ack-1");
    assert_eq!(acked["event"], "result");
    assert_eq!(acked["result"]["acked"][0], id.as_str());
    assert!(eventually(
        || home.run(&["--json", "status", &id]).json()["state"] == "read"
    ));

    // Sending from the session: a result, then state events.
    b.write(r#"{"op":"send","to":"a","body":"hello a","ref":7}"#);
    let result = b.expect(|v| v["ref"] == 7);
    assert_eq!(result["result"]["state"], "queued");
    let reply_id = result["result"]["id"].as_str().unwrap().to_owned();
    let delivered = b.expect(|v| v["event"] == "state" && v["state"] == "delivered");
    assert_eq!(delivered["id"], reply_id.as_str());

    // A send that waits answers once the state is reached.
    b.write(r#"{"op":"send","to":"a","body":"wait for it","wait":"delivered","ref":"w"}"#);
    let waited = b.expect(|v| v["ref"] == "w");
    assert_eq!(waited["event"], "result", "{waited}");
    assert!(
        ["delivered", "read"].contains(&waited["result"]["state"].as_str().unwrap()),
        "{waited}"
    );

    // Every malformed line gets its own error, and the session goes on.
    for (line, code) in [
        ("this is not json", "invalid_json"),
        ("[1,2,3]", "invalid_json"),
        (r#"{"op":"fly"}"#, "unknown_op"),
        (r#"{"body":"no op"}"#, "missing_field"),
        (r#"{"op":"send","to":"a"}"#, "missing_field"),
        (
            r#"{"op":"send","to":"a","body":"x","colour":"red"}"#,
            "invalid_field",
        ),
    ] {
        b.write(line);
        let error = b.expect(|v| v["event"] == "error");
        assert_eq!(error["code"], code, "{line}: {error}");
    }
    let oversize = format!(
        r#"{{"op":"send","to":"a","body":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    b.write(&oversize);
    let error = b.expect(|v| v["event"] == "error");
    assert_eq!(error["code"], "too_large");
    b.write(r#"{"op":"whoami","ref":"still-here"}"#);
    let me = b.expect(|v| v["ref"] == "still-here");
    assert_eq!(me["result"]["name"], "b");

    // The JSON Schemas in schemas/ describe exactly this: every line the
    // session printed fits the output schema; the commands above that were
    // accepted fit the input schema and the refused ones do not.
    check_schema("schemas/connect-out.schema.json", &b.seen, &[]);
    let malformed: Vec<Value> = [
        "[1,2,3]",
        r#"{"op":"fly"}"#,
        r#"{"body":"no op"}"#,
        r#"{"op":"send","to":"a"}"#,
        r#"{"op":"send","to":"a","body":"x","colour":"red"}"#,
        r#"{"op":"state","id":"m1"}"#,
        r#"{"op":"invite","ttl_ms":5}"#,
        r#"{"op":"whoami","as":"../etc"}"#,
    ]
    .iter()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect();
    check_schema(
        "schemas/connect-in.schema.json",
        &[
            json!({"op": "ack", "ids": [id], "ref": "ack-1"}),
            json!({"op":"send","to":"a","body":"hello a","ref":7}),
            json!({"op":"whoami","ref":"still-here"}),
            json!({"op":"recv","max":5,"wait_ms":100}),
            json!({"op":"invite","ttl_ms":60000}),
            json!({"op":"status","id":id,"wait":"delivered","wait_ms":500,"ref":[1]}),
        ],
        &malformed,
    );
}

#[test]
fn a_session_survives_a_relay_restart() {
    let mut pair = Paired::start(&[]);
    let mut bob = Session::start(&pair.bob, "bob");
    pair.with_relay_stopped(|_| std::thread::sleep(Duration::from_millis(200)));
    pair.alice.run(&["send", "bob", "after the restart"]).ok();
    let event = bob.expect(|v| v["event"] == "message");
    assert_eq!(event["message"]["body"], "after the restart");
}

/// Tasks, streaming, cards, discovery and permissions through the JSON
/// lines door: a requester session and a worker session, and the events
/// each sees.
#[test]
fn a_task_runs_end_to_end_between_two_sessions() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    let mut a = Session::start(&home, "a");
    let mut b = Session::start(&home, "b");

    b.write(r#"{"op":"set_card","capabilities":["tests"],"takes_tasks":true,"ref":"card"}"#);
    assert_eq!(
        b.expect(|v| v["ref"] == "card")["result"]["sent_to"][0],
        "a"
    );
    a.write(r#"{"op":"discover","capability":"tests","wait_ms":1000,"ref":"d"}"#);
    let found = a.expect(|v| v["ref"] == "d");
    assert_eq!(found["result"]["contacts"][0]["name"], "b", "{found}");

    a.write(r#"{"op":"send","to":"b","body":"run the tests","kind":"task","ref":"t"}"#);
    let task = a.expect(|v| v["ref"] == "t")["result"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let given = b.expect(|v| v["event"] == "task" && v["id"] == task.as_str());
    assert_eq!(given["role"], "given");
    b.write(&json!({"op":"report","id":task,"state":"working","ref":"w"}).to_string());
    b.expect(|v| v["ref"] == "w");
    b.write(&json!({"op":"stream","id":task,"text":"1 passed\n","ref":"s"}).to_string());
    assert_eq!(b.expect(|v| v["ref"] == "s")["result"]["seq"], 0);
    let chunk = a.expect(|v| v["event"] == "chunk");
    assert_eq!(chunk["text"], "1 passed\n");
    b.write(
        &json!({"op":"report","id":task,"state":"completed","result":"1 passed\n","ref":"c"})
            .to_string(),
    );
    b.expect(|v| v["ref"] == "c");
    a.write(&json!({"op":"task","id":task,"wait_ms":5000,"ref":"end"}).to_string());
    assert_eq!(
        a.expect(|v| v["ref"] == "end")["result"]["state"],
        "completed"
    );
    a.write(&json!({"op":"chunks","id":task,"ref":"all"}).to_string());
    let all = a.expect(|v| v["ref"] == "all");
    assert_eq!(all["result"]["chunks"][0]["text"], "1 passed\n");

    // b stops taking tasks from a: the next is rejected with the reason.
    b.write(r#"{"op":"permit","peer":"a","permissions":["task"],"allow":false,"ref":"p"}"#);
    assert_eq!(
        b.expect(|v| v["ref"] == "p")["result"]["permissions"],
        json!(["chat", "file"])
    );
    a.write(r#"{"op":"send","to":"b","body":"again","kind":"task","ref":"t2"}"#);
    let again = a.expect(|v| v["ref"] == "t2")["result"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rejected =
        a.expect(|v| v["event"] == "task" && v["id"] == again.as_str() && v["state"] == "rejected");
    assert!(
        rejected["detail"].as_str().unwrap().contains("permission"),
        "{rejected}"
    );
    check_schema("schemas/connect-out.schema.json", &a.seen, &[]);
    check_schema("schemas/connect-out.schema.json", &b.seen, &[]);
}
