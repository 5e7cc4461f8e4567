//! `agentwire bridge`: the HTTP door for one-shot agents.

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::util::*;

struct BridgeProcess {
    child: Child,
    http: Http,
}

/// An HTTP client for one bridge.
#[derive(Clone)]
struct Http {
    addr: String,
    token: String,
}

impl BridgeProcess {
    fn start(home: &TestHome, identity: &str) -> BridgeProcess {
        let mut child = Command::new(agentwire_bin())
            .arg("--home")
            .arg(home.path())
            .args([
                "--as",
                identity,
                "--json",
                "bridge",
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let startup: Value = serde_json::from_str(&line).unwrap();
        let addr = startup["url"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_owned();
        let token = std::fs::read_to_string(startup["token_file"].as_str().unwrap()).unwrap();
        BridgeProcess {
            child,
            http: Http { addr, token },
        }
    }
}

impl std::ops::Deref for BridgeProcess {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Http {
    /// One HTTP/1.1 request; returns status and parsed JSON body.
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if !body.is_empty() {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (status, body) = parse_http_response(&response);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, Some(&self.token.clone()), None)
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn siblings() -> TestHome {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    home
}

#[test]
fn the_bridge_requires_its_token() {
    let home = siblings();
    let bridge = BridgeProcess::start(&home, "a");
    let (status, body) = bridge.request("GET", "/v1/contacts", None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = bridge.request("GET", "/v1/contacts", Some("wrong"), None);
    assert_eq!(status, 401);
    let (status, body) = bridge.get("/v1/contacts");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["contacts"][0]["name"], "b");
    // Unknown paths and wrong methods answer JSON errors too.
    let (status, body) = bridge.get("/v1/nope");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/send")
    );
    let (status, body) = bridge.get("/v1/send");
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(home.path().join("bridge.token"))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode & 0o077, 0);
}

#[test]
fn send_status_and_a_long_poll_that_wakes_on_arrival() {
    let home = siblings();
    let b = BridgeProcess::start(&home, "b");
    let poll = std::thread::spawn({
        let http = b.http.clone();
        move || http.get("/v1/recv?wait=20")
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let a = BridgeProcess::start(&home, "a");
    let token = a.token.clone();
    let (status, sent) = a.request(
        "POST",
        "/v1/send",
        Some(&token),
        Some(&json!({"to": "b", "body": "over http", "priority": "urgent"})),
    );
    assert_eq!(status, 200, "{sent}");
    let (status, got) = poll.join().unwrap();
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["messages"][0]["body"], "over http");
    assert_eq!(got["messages"][0]["from"]["name"], "a");

    let id = sent["id"].as_str().unwrap();
    assert!(eventually(
        || a.get(&format!("/v1/status/{id}")).1["state"] == "read"
    ));
    let (status, body) = a.get("/v1/status/not-an-id");
    assert_eq!(status, 400, "{body}");
    let (status, body) = a.request(
        "POST",
        "/v1/send",
        Some(&token),
        Some(&json!({"to": "nobody", "body": "x"})),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_peer");
    let (status, body) = a.request(
        "POST",
        "/v1/send",
        Some(&token),
        Some(&json!({"body": "no recipient"})),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn two_concurrent_long_polls_never_get_the_same_message() {
    let home = siblings();
    let b = BridgeProcess::start(&home, "b");
    let poller = |bridge: &Http| {
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let (status, got) = bridge.get("/v1/recv?wait=2&max=3");
            assert_eq!(status, 200);
            let batch: Vec<String> = got["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["body"].as_str().unwrap().to_owned())
                .collect();
            if batch.is_empty() {
                break;
            }
            seen.extend(batch);
        }
        seen
    };
    let (one, two) = std::thread::scope(|scope| {
        let one = scope.spawn(|| poller(&b.http));
        let two = scope.spawn(|| poller(&b.http));
        for n in 0..40 {
            home.api(json!({"op": "send", "to": "b", "body": format!("m{n}")}));
        }
        (one.join().unwrap(), two.join().unwrap())
    });
    let first: HashSet<&String> = one.iter().collect();
    let second: HashSet<&String> = two.iter().collect();
    assert_eq!(
        first.intersection(&second).count(),
        0,
        "a message went to both polls"
    );
    assert_eq!(one.len() + two.len(), 40, "{} + {}", one.len(), two.len());
}

#[test]
fn an_inbox_long_poll_wakes_on_arrival_and_takes_nothing() {
    let home = siblings();
    let b = BridgeProcess::start(&home, "b");
    let poll = std::thread::spawn({
        let http = b.http.clone();
        move || http.get("/v1/inbox?wait=20")
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    home.run(&["--as", "a", "send", "b", "peek at me"]).ok();
    let (status, got) = poll.join().unwrap();
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["messages"][0]["body"], "peek at me");
    assert_eq!(got["unread"], 1);
    // Still there for whoever takes it.
    let (_, taken) = b.get("/v1/recv");
    assert_eq!(taken["messages"][0]["body"], "peek at me");
}

/// `POST /v1/op` takes every operation of the JSON lines door: a task runs
/// through it from both sides, and a bad op is a 400 that lists the ops.
#[test]
fn every_operation_goes_through_v1_op() {
    let home = siblings();
    let bridge = BridgeProcess::start(&home, "a");
    let op =
        |body: Value| bridge.request("POST", "/v1/op", Some(&bridge.token.clone()), Some(&body));
    let (code, sent) = op(json!({"op": "send", "to": "b", "body": "run it", "kind": "task"}));
    assert_eq!(code, 200, "{sent}");
    assert_eq!(sent["op"], "send");
    let task = sent["result"]["id"].as_str().unwrap().to_owned();
    // The worker's side, through its own bridge (a bridge started with
    // `--as` acts as that identity only).
    let worker = BridgeProcess::start(&home, "b");
    let work =
        |body: Value| worker.request("POST", "/v1/op", Some(&worker.token.clone()), Some(&body));
    assert!(eventually(|| {
        work(json!({"op": "report", "id": task, "state": "working"})).0 == 200
    }));
    let (code, done) = work(json!({
        "op": "report", "id": task, "state": "completed", "result": "ran"
    }));
    assert_eq!(code, 200, "{done}");
    let (_, followed) = op(json!({"op": "task", "id": task, "wait_ms": 10000}));
    assert_eq!(followed["result"]["state"], "completed", "{followed}");
    let (_, listed) = op(json!({"op": "tasks"}));
    assert_eq!(listed["result"]["tasks"][0]["role"], "asked");
    let (code, card) = op(json!({"op": "set_card", "capabilities": ["http"]}));
    assert_eq!(
        (code, &card["result"]["card"]["capabilities"][0]),
        (200, &json!("http"))
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "some notes").unwrap();
    let (code, sent) = op(json!({"op": "send_file", "to": "b", "path": file}));
    assert_eq!(code, 200, "{sent}");
    assert_eq!(sent["result"]["size"], 10);
    let (_, kept) = op(
        json!({"op": "status", "id": sent["result"]["id"], "wait": "delivered", "wait_ms": 10000}),
    );
    assert_eq!(kept["result"]["state"], "delivered", "{kept}");
    let (code, bad) = op(json!({"op": "fly"}));
    assert_eq!(code, 400, "{bad}");
    assert!(bad.to_string().contains("discover"), "{bad}");
}

/// Finding: a request's `as` overrode `bridge --as`, and bodies between 1 and
/// 2 MiB got 503 "daemon unreachable" instead of a size error.
#[test]
fn a_bridge_keeps_its_identity_and_answers_oversized_bodies_with_their_size() {
    let home = siblings();
    let bridge = BridgeProcess::start(&home, "a");
    let token = bridge.token.clone();
    // Acting as another identity of the home is refused, everywhere.
    let (status, body) = bridge.request(
        "POST",
        "/v1/send",
        Some(&token),
        Some(&json!({"to": "a", "body": "as b", "as": "b"})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden_identity");
    let (status, _) = bridge.get("/v1/recv?as=b");
    assert_eq!(status, 403);
    let (status, _) = bridge.request(
        "POST",
        "/v1/op",
        Some(&token),
        Some(&json!({"op": "recv", "as": "b"})),
    );
    assert_eq!(status, 403);
    // Naming its own identity is fine.
    let (status, body) = bridge.request(
        "POST",
        "/v1/send",
        Some(&token),
        Some(&json!({"to": "b", "body": "as a", "as": "a"})),
    );
    assert_eq!(status, 200, "{body}");
    // Too large: a size error, never "daemon unreachable".
    for size in [200 * 1024, 1536 * 1024, 3 * 1024 * 1024] {
        let (status, body) = bridge.request(
            "POST",
            "/v1/send",
            Some(&token),
            Some(&json!({"to": "b", "body": "x".repeat(size)})),
        );
        assert!(status == 400 || status == 413, "{size}: {status} {body}");
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            code == "body_too_large" || code == "invalid_request",
            "{size}: {body}"
        );
    }
    let (status, _) = bridge.get("/v1/contacts");
    assert_eq!(status, 200, "the bridge still serves");
}

/// Finding: `--listen 0.0.0.0` over plain HTTP started without a word, and a
/// weak or world-readable `bridge.token` was used as it was.
#[test]
fn a_bridge_refuses_a_weak_or_readable_token_and_plain_http_off_loopback() {
    use std::os::unix::fs::PermissionsExt;
    let home = siblings();
    let start = |extra: &[&str]| {
        let mut args = vec!["--as", "a", "bridge", "--listen"];
        args.extend_from_slice(extra);
        home.run(&args)
    };
    let refused = start(&["0.0.0.0:0"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("plain HTTP"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--allow-remote"),
        "{}",
        refused.stderr
    );
    let token = home.path().join("bridge.token");
    std::fs::write(&token, "short").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let weak = start(&["127.0.0.1:0"]);
    assert_eq!(weak.code, 3, "{weak:?}");
    assert!(weak.stderr.contains("weak token"), "{}", weak.stderr);
    std::fs::write(&token, "a".repeat(64)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let readable = start(&["127.0.0.1:0"]);
    assert_eq!(readable.code, 3, "{readable:?}");
    assert!(readable.stderr.contains("chmod 600"), "{}", readable.stderr);
    // Deleted, it is made again, strong and private.
    std::fs::remove_file(&token).unwrap();
    let bridge = BridgeProcess::start(&home, "a");
    let made = std::fs::read_to_string(&token).unwrap();
    assert!(made.len() >= 32);
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0);
    assert_eq!(bridge.get("/v1/contacts").0, 200);
}
