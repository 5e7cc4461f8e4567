//! `agentwire serve`: a real serve process answering real `call`s and chat
//! messages, with small shell commands standing in for an agent.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::util::*;

/// A home with `planner` and `worker`, and `worker` serving `args`.
struct Served {
    home: TestHome,
    serve: Child,
}

/// `agentwire --as NAME serve ARGS` in `home`, once it is ready.
fn start_serve(home: &TestHome, name: &str, args: &[&str]) -> Child {
    let mut serve = Command::new(agentwire_bin())
        .arg("--home")
        .arg(home.path())
        .args(["--as", name, "serve"])
        .args(args)
        .env_remove("AGENTWIRE_AGENT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("answers chat and task messages"), "{first}");
    std::thread::spawn(move || for _ in lines {});
    serve
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let home = TestHome::new();
        home.run(&["init", "--name", "planner"]).ok();
        home.run(&["init", "--name", "worker"]).ok();
        let serve = start_serve(&home, "worker", args);
        Served { home, serve }
    }

    /// `call worker TEXT` as planner, to its end.
    fn call(&self, text: &str) -> Run {
        self.home
            .run(&["--json", "call", "worker", text, "--timeout", "20s"])
    }

    fn call_in_background(&self, text: &str) -> Child {
        Command::new(agentwire_bin())
            .arg("--home")
            .arg(self.home.path())
            .args(["--json", "call", "worker", text, "--timeout", "30s"])
            .env_remove("AGENTWIRE_AGENT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Sends SIGTERM; the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = self.serve.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.serve.wait().unwrap().code()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

#[test]
fn serve_answers_tasks_and_chat_with_the_commands_output() {
    let served = Served::start(&["--on-message", "tr a-z A-Z"]);
    let run = served.call("make this loud").ok();
    assert_eq!(run.json()["result"]["body"], "MAKE THIS LOUD");
    assert_eq!(run.json()["task"]["state"], "completed");
    // A chat message gets a chat reply in its thread.
    let id = served.home.run(&["send", "worker", "hello"]).ok().stdout;
    let id = id.split_whitespace().next().unwrap().to_owned();
    let mut reply = Value::Null;
    assert!(eventually(|| {
        let got = served.home.run(&["--json", "recv"]);
        if got.code == 0 {
            reply = got.json()["messages"][0].clone();
        }
        !reply.is_null()
    }));
    assert_eq!(reply["body"], "HELLO");
    assert_eq!(reply["kind"], "chat");
    assert_eq!(reply["reply_to"], id.as_str());
    assert_eq!(reply["thread"], id.as_str());
    // A result is never answered: it stays unread at the worker.
    served
        .home
        .run(&["send", "worker", "for the record", "--kind", "result"])
        .ok();
    assert!(eventually(|| {
        served.home.run(&["--as", "worker", "--json", "inbox"]).code == 0
    }));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        served.home.run(&["recv"]).code,
        1,
        "nothing answered the result"
    );
    assert_eq!(served.stop(), Some(0), "serve stops cleanly on SIGTERM");
}

#[test]
fn a_failing_or_slow_command_fails_its_task_with_the_reason() {
    let served = Served::start(&[
        "--on-message",
        r#"case "$(cat)" in fail) echo boom >&2; exit 3;; slow) sleep 5;; *) : ;; esac"#,
        "--timeout",
        "1s",
    ]);
    let run = served.call("fail");
    assert_eq!(run.code, 22, "{run:?}");
    assert!(run.stderr.contains("exit code 3: boom"), "{run:?}");
    let run = served.call("slow");
    assert_eq!(run.code, 22, "{run:?}");
    assert!(run.stderr.contains("timed out after 1s"), "{run:?}");
    // Empty output: the task completes with an empty result.
    let run = served.call("quiet").ok();
    assert_eq!(run.json()["task"]["state"], "completed");
}

#[test]
fn serve_runs_at_most_its_concurrency_and_rejects_beyond_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().display().to_string();
    // Each run records how many were running when it started.
    let command = format!(
        "mkdir -p {log}/running; touch {log}/running/$$; ls {log}/running | wc -l >> {log}/overlap; sleep 0.5; rm {log}/running/$$"
    );
    let served = Served::start(&["--on-message", &command, "--concurrency", "2"]);
    let calls: Vec<Child> = (0..5)
        .map(|i| served.call_in_background(&format!("job {i}")))
        .collect();
    for call in calls {
        let output = call.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    }
    let overlap = std::fs::read_to_string(dir.path().join("overlap")).unwrap();
    let most: u32 = overlap
        .lines()
        .map(|l| l.trim().parse::<u32>().unwrap())
        .max()
        .unwrap();
    assert_eq!(overlap.lines().count(), 5, "{overlap}");
    assert!(most <= 2, "{most} ran at once: {overlap}");
    drop(served);

    // One slot and a queue of one: of four tasks at once, those beyond the
    // running one and the queued one are rejected, and say why.
    let served = Served::start(&[
        "--on-message",
        "sleep 1",
        "--concurrency",
        "1",
        "--queue",
        "1",
    ]);
    let calls: Vec<Child> = (0..4)
        .map(|i| served.call_in_background(&format!("job {i}")))
        .collect();
    let codes: Vec<(Option<i32>, String)> = calls
        .into_iter()
        .map(|c| {
            let output = c.wait_with_output().unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        })
        .collect();
    let rejected: Vec<&String> = codes
        .iter()
        .filter(|(code, _)| *code == Some(23))
        .map(|(_, e)| e)
        .collect();
    assert!(!rejected.is_empty(), "{codes:?}");
    assert!(rejected.iter().all(|e| e.contains("busy")), "{codes:?}");
    assert!(
        codes.iter().all(|(code, _)| matches!(code, Some(0 | 23))),
        "{codes:?}"
    );
}

#[test]
fn cancel_stops_the_running_command() {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("finished");
    let command = format!("sleep 3 && touch {}", done.display());
    let served = Served::start(&["--on-message", &command]);
    let run = served
        .home
        .run(&["--json", "call", "worker", "long", "--timeout", "1s"]);
    assert_eq!(run.code, 18, "{run:?}");
    let id = run.json()["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(run.json()["task"]["state"], "working");
    served.home.run(&["cancel", &id]).ok();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!done.exists(), "the canceled command ran to its end");
    let task = served.home.run(&["--as", "worker", "--json", "tasks"]).ok();
    assert_eq!(task.json()["tasks"][0]["state"], "canceled");
}

#[test]
fn serve_finishes_what_runs_when_told_to_stop() {
    let served = Served::start(&["--on-message", "sleep 1; echo finished"]);
    let call = served.call_in_background("work");
    // Stopped while the command runs: it finishes, its result goes back.
    assert!(eventually(|| {
        served
            .home
            .run(&["--as", "worker", "--json", "tasks"])
            .ok()
            .json()["tasks"][0]["state"]
            == "working"
    }));
    let mut served = served;
    let pid = served.serve.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert_eq!(served.serve.wait().unwrap().code(), Some(0));
    let output = call.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["result"]["body"], "finished\n");
}

/// A contact without the `task` permission: its call is rejected by the
/// worker's daemon with the reason, and the command never runs; chat still
/// is answered. `contacts allow` lets tasks in again.
#[test]
fn a_task_from_a_contact_without_the_task_permission_never_runs() {
    let marker = tempfile::tempdir().unwrap();
    let ran = marker.path().join("ran");
    let served = Served::start(&[
        "--on-message",
        &format!("touch {}; tr a-z A-Z", ran.display()),
    ]);
    let denied = served
        .home
        .run(&[
            "--as", "worker", "--json", "contacts", "deny", "planner", "task",
        ])
        .ok();
    assert_eq!(
        denied.json()["permissions"],
        serde_json::json!(["chat", "file"])
    );
    let listed = served.home.run(&["--as", "worker", "contacts"]).ok().stdout;
    assert!(listed.contains("may-send:chat,file"), "{listed}");

    let refused = served.call("delete everything");
    assert_eq!(refused.code, 23, "rejected: {refused:?}");
    assert!(
        refused.stderr.contains("task_rejected") && refused.stderr.contains("not granted"),
        "{}",
        refused.stderr
    );
    assert!(!ran.exists(), "the command never ran");
    let tasks = served.home.run(&["--as", "worker", "--json", "tasks"]).ok();
    assert_eq!(tasks.json()["tasks"], serde_json::json!([]));

    served
        .home
        .run(&["--as", "worker", "contacts", "allow", "planner", "task"])
        .ok();
    let run = served.call("now it may").ok();
    assert_eq!(run.json()["result"]["body"], "NOW IT MAY");
    assert!(ran.exists());
}

/// Two bots that answer each other's chat stop once the chain of replies
/// reaches --max-hops: the hop count travels inside the encryption and
/// grows by one with each reply.
#[test]
fn two_bots_answering_each_other_stop_at_the_hop_limit() {
    let home = TestHome::new();
    home.run(&["init", "--name", "ping"]).ok();
    home.run(&["init", "--name", "pong"]).ok();
    let mut bots = [
        start_serve(&home, "ping", &["--on-message", "cat", "--max-hops", "3"]),
        start_serve(&home, "pong", &["--on-message", "cat", "--max-hops", "3"]),
    ];
    // Sent by hand as ping: hops 0. pong answers (1), ping answers (2),
    // pong answers (3), and ping answers nothing more.
    home.run(&["--as", "ping", "send", "pong", "ball"]).ok();
    let sent = |who: &str| -> usize {
        let list = home.run(&["--as", who, "--json", "sent"]).ok().json();
        list["messages"].as_array().map_or(0, Vec::len)
    };
    let settled = eventually(|| sent("pong") == 2 && sent("ping") == 2);
    assert!(
        settled,
        "{} {} {}",
        sent("ping"),
        sent("pong"),
        home.run(&["--as", "ping", "--json", "sent"]).stdout
    );
    let last = home.run(&["--as", "ping", "--json", "inbox"]).ok().json();
    assert_eq!(last["messages"][0]["hops"], 3, "{last}");
    assert_eq!(last["messages"][0]["body"], "ball");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!((sent("ping"), sent("pong")), (2, 2), "the exchange stopped");
    for bot in &mut bots {
        let _ = bot.kill();
        let _ = bot.wait();
    }
}

/// A command that prints lines slowly: `call --stream` gets them as ordered
/// chunks while it runs, and together they are exactly the result.
#[test]
fn call_stream_prints_the_output_as_ordered_chunks_that_make_up_the_result() {
    let served = Served::start(&[
        "--on-message",
        r#"for i in 1 2 3 4; do printf 'line %s é\n' "$i"; sleep 0.2; done; printf 'no newline'"#,
    ]);
    let run = served
        .home
        .run(&[
            "--json",
            "call",
            "worker",
            "go",
            "--stream",
            "--timeout",
            "20s",
        ])
        .ok();
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, chunks) = lines.split_last().unwrap();
    let seqs: Vec<u64> = chunks
        .iter()
        .map(|c| c["chunk"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "{run:?}");
    assert!(seqs.len() >= 5, "one chunk a line at least: {seqs:?}");
    let joined: String = chunks
        .iter()
        .map(|c| c["chunk"]["text"].as_str().unwrap())
        .collect();
    let expected = "line 1 é\nline 2 é\nline 3 é\nline 4 é\nno newline";
    assert_eq!(joined, expected);
    assert_eq!(last["result"]["body"], expected);
    assert_eq!(last["task"]["state"], "completed");

    // In text, the output once: streamed, and the result adds nothing.
    let text = served
        .home
        .run(&["call", "worker", "again", "--stream", "--timeout", "20s"])
        .ok();
    assert_eq!(text.stdout, expected);
}

/// `--workdir`: a command writes in its own directory and nowhere else, not
/// through `../`, a link it makes, an absolute path, or another process's
/// `/proc/PID/root`.
#[test]
fn a_command_under_workdir_cannot_write_outside_its_own_directory() {
    let outside = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = outside.path().display().to_string();
    let script = format!(
        r#"echo in > mine && echo inside-ok
echo x > ../escape 2>/dev/null && echo ESCAPED-parent
ln -s {out} out && {{ echo y > out/escape2; }} 2>/dev/null && echo ESCAPED-link
{{ echo z > {out}/escape3; }} 2>/dev/null && echo ESCAPED-absolute
for p in /proc/[0-9]*; do {{ echo w > $p/root{out}/escape4; }} 2>/dev/null && echo ESCAPED-proc; done
echo "$TMPDIR" | grep -q "^$PWD" && echo tmp-inside
echo done"#
    );
    let served = Served::start(&[
        "--on-message",
        &script,
        "--workdir",
        &work.path().display().to_string(),
    ]);
    let run = served.call("try to escape").ok();
    assert_eq!(
        run.json()["result"]["body"],
        "inside-ok\ntmp-inside\ndone\n",
        "{run:?}"
    );
    let written: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert!(written.is_empty(), "{written:?}");
    assert!(!work.path().join("escape").exists());
    let mine: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path().join("mine"))
        .collect();
    assert_eq!(mine.len(), 1, "one directory, the caller's: {mine:?}");
    assert_eq!(std::fs::read_to_string(&mine[0]).unwrap(), "in\n");
}

/// Where commands cannot be confined (here: no unshare(1) on the PATH),
/// `serve --workdir` does not start unconfined: it says why and what to do.
#[test]
fn serve_with_workdir_refuses_to_start_when_it_cannot_confine_commands() {
    let home = TestHome::new();
    home.run(&["init", "--name", "worker"]).ok();
    let work = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(agentwire_bin())
        .arg("--home")
        .arg(home.path())
        .args(["serve", "--on-message", "cat", "--workdir"])
        .arg(work.path())
        .env("PATH", empty.path())
        .env_remove("AGENTWIRE_AGENT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--no-isolation"), "{stderr}");
    assert!(stderr.contains("unshare"), "{stderr}");
}
