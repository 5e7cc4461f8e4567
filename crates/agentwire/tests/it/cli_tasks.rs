//! Tasks through the binary: `call` follows a task to its end and says how
//! it ended by its exit code; the worker moves it with `report`; the
//! requester stops it with `cancel`; `tasks` lists both sides.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::util::*;

fn siblings() -> TestHome {
    let home = TestHome::new();
    home.run(&["init", "--name", "planner"]).ok();
    home.run(&["init", "--name", "coder"]).ok();
    home
}

/// `agentwire call coder TEXT` in the background.
fn call(home: &TestHome, text: &str, timeout: &str) -> Child {
    Command::new(agentwire_bin())
        .arg("--home")
        .arg(home.path())
        .args(["call", "coder", text, "--timeout", timeout])
        .env_remove("AGENTWIRE_AGENT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The newest task coder was given, once one arrived that is not among
/// `seen` (which then holds it too).
fn given(home: &TestHome, seen: &mut Vec<String>) -> Value {
    let mut task = Value::Null;
    let arrived = eventually(|| {
        let list = home.run(&["--as", "coder", "--json", "tasks"]).ok().json();
        task = list["tasks"][0].clone();
        task["role"] == "given" && !seen.iter().any(|id| task["id"] == id.as_str())
    });
    assert!(arrived, "no new task arrived at coder");
    seen.push(task["id"].as_str().unwrap().to_owned());
    task
}

#[test]
fn call_prints_the_result_and_its_exit_code_says_how_the_task_ended() {
    let home = siblings();
    let mut seen = Vec::new();

    // Completed: the result is printed and taken (read once, here).
    let caller = call(&home, "run the tests", "20s");
    let task = given(&home, &mut seen);
    let id = task["id"].as_str().unwrap();
    assert_eq!(task["state"], "submitted");
    assert_eq!(task["summary"], "run the tests");
    home.run(&["--as", "coder", "report", id, "working"]).ok();
    home.run(&["--as", "coder", "report", id, "completed", "all 197 pass"])
        .ok();
    let output = caller.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "all 197 pass\n");
    assert_eq!(home.run(&["recv"]).code, 1, "the result was taken by call");
    let line = home.run(&["tasks"]).ok().stdout;
    assert!(
        line.contains(&format!("{id} completed asked coder(")),
        "{line}"
    );

    // Failed and rejected: the worker's reason on stderr, exits 22 and 23.
    for (state, code) in [("failed", 22), ("rejected", 23)] {
        let caller = call(&home, "something", "20s");
        let id = given(&home, &mut seen)["id"].as_str().unwrap().to_owned();
        home.run(&["--as", "coder", "report", &id, state, "not today"])
            .ok();
        let output = caller.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(code), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(state) && stderr.contains("not today"),
            "{stderr}"
        );
    }

    // Not finished in time: exit 18, and the task goes on; the requester
    // cancels it and the worker sees that.
    let run = home.run(&["--json", "call", "coder", "a long job", "--timeout", "1s"]);
    assert_eq!(run.code, 18, "{run:?}");
    let id = run.json()["task"]["id"].as_str().unwrap().to_owned();
    seen.push(id.clone());
    let canceled = home.run(&["--json", "cancel", &id]).ok().json();
    assert_eq!(canceled["state"], "canceled");
    assert!(eventually(|| {
        home.run(&["--as", "coder", "--json", "tasks"]).ok().json()["tasks"][0]["state"]
            == "canceled"
    }));
    let late = home.run(&["--as", "coder", "report", &id, "completed", "done"]);
    assert_eq!(late.code, 2, "{late:?}");
    assert!(late.stderr.contains("canceled"), "{late:?}");

    // A worker that needs input: exit 25, with what it needs.
    let caller = call(&home, "deploy it", "20s");
    let id = given(&home, &mut seen)["id"].as_str().unwrap().to_owned();
    home.run(&[
        "--as",
        "coder",
        "report",
        &id,
        "input-required",
        "which region?",
    ])
    .ok();
    let output = caller.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(25), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("which region?"));

    // Each side makes only its own moves, and bad states are named.
    let run = home.run(&["report", &id, "working"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = home.run(&["--as", "coder", "report", &id, "canceled"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("working, input-required"), "{run:?}");
    let run = home.run(&["--as", "coder", "report", &id, "completed"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("needs the result"), "{run:?}");
}

#[test]
fn card_set_and_discover_by_capability() {
    let home = TestHome::new();
    home.run(&["init", "--name", "planner"]).ok();
    home.run(&["init", "--name", "coder"]).ok();
    let set = home
        .run(&[
            "--as",
            "coder",
            "card",
            "set",
            "--name",
            "Coder",
            "--capability",
            "rust,code-review",
            "--takes-tasks",
        ])
        .ok();
    assert!(set.stdout.contains("sent to planner"), "{set:?}");
    let bad = home.run(&["card", "set", "--capability", "Not A Tag"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("a-z, 0-9"), "{}", bad.stderr);
    let mut line = String::new();
    assert!(eventually(|| {
        line = home
            .run(&["discover", "--capability", "rust", "--wait", "1s"])
            .ok()
            .stdout;
        !line.is_empty()
    }));
    assert!(line.starts_with("coder "), "{line}");
    assert!(line.contains("online"), "{line}");
    assert!(line.contains("takes tasks"), "{line}");
    let json = home
        .run(&[
            "--json",
            "discover",
            "--capability",
            "python",
            "--wait",
            "0s",
        ])
        .ok()
        .json();
    assert_eq!(json["contacts"], serde_json::json!([]));
    let mine = home.run(&["--as", "coder", "--json", "card"]).ok().json();
    assert_eq!(
        mine["capabilities"],
        serde_json::json!(["rust", "code-review"])
    );
}
