//! `agentwire send-file`: files through the whole path (two identities of
//! one home, its daemon and its relay), checked by hash, kept under safe
//! names, refused over the limits, and resumed after a crash.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::*;

fn siblings() -> TestHome {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    home
}

/// A file of `size` bytes that no two offsets repeat in a simple way.
fn make_file(dir: &Path, name: &str, size: usize) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = Vec::with_capacity(1 << 16);
    let mut left = size;
    while left > 0 {
        chunk.clear();
        for _ in 0..(left.min(1 << 16)) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.push(state as u8);
        }
        file.write_all(&chunk).unwrap();
        left -= chunk.len();
    }
    path
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// b's file messages, taken.
fn received(home: &TestHome, count: usize) -> Vec<Value> {
    let mut files = Vec::new();
    assert!(
        eventually(|| {
            let run = home.run(&["--as", "b", "--json", "recv"]);
            if run.code == 0 {
                files.extend(run.json()["messages"].as_array().unwrap().iter().cloned());
            }
            files.len() >= count
        }),
        "{count} files never arrived: {files:?}"
    );
    files
}

#[test]
fn a_20_mib_file_arrives_hash_equal_and_hostile_names_are_made_safe() {
    let home = siblings();
    let dir = tempfile::tempdir().unwrap();
    let big = make_file(dir.path(), "data.bin", 20 << 20);
    let sent = home
        .run(&[
            "--json",
            "send-file",
            "b",
            big.to_str().unwrap(),
            "--wait",
            "--timeout",
            "5m",
        ])
        .ok()
        .json();
    assert_eq!(sent["state"]["state"], "delivered", "{sent}");
    assert_eq!(sent["file"]["size"], 20 << 20);
    assert_eq!(sent["file"]["sha256"], sha256(&big));
    let file = &received(&home, 1)[0];
    assert_eq!(file["kind"], "file");
    let saved = file["file"]["path"].as_str().unwrap();
    assert_eq!(sha256(Path::new(saved)), sha256(&big));
    assert!(saved.ends_with("/files/b/data.bin"), "{saved}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(saved).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "kept private");

    // Hostile names, offered by a sender that chose them, land safely in
    // b's directory; none overwrites another.
    let small = make_file(dir.path(), "small.txt", 1000);
    let files_dir = Path::new(saved).parent().unwrap().to_owned();
    for name in ["../../x", "/etc/passwd", "con", "", "data.bin"] {
        home.run(&[
            "send-file",
            "b",
            small.to_str().unwrap(),
            "--name",
            name,
            "--wait",
        ])
        .ok();
    }
    let kept: Vec<String> = received(&home, 5)
        .iter()
        .map(|m| m["file"]["path"].as_str().unwrap().to_owned())
        .collect();
    let names: Vec<&str> = kept
        .iter()
        .map(|p| {
            assert_eq!(Path::new(p).parent().unwrap(), files_dir, "{p}");
            Path::new(p).file_name().unwrap().to_str().unwrap()
        })
        .collect();
    assert_eq!(names, ["x", "passwd", "_con", "file", "data-2.bin"]);
    assert_eq!(
        sha256(Path::new(saved)),
        sha256(&big),
        "the first is untouched"
    );
    let partial: Vec<_> = std::fs::read_dir(files_dir.join(".partial"))
        .unwrap()
        .collect();
    assert!(
        partial.is_empty(),
        "partial files are dropped once kept: {partial:?}"
    );
    assert!(!home.path().join("x").exists());
}

#[test]
fn files_over_the_limit_are_refused_with_the_limit_in_the_error() {
    let home = siblings();
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "f.bin", 3000);
    let run = home.run(&["send-file", "b", file.to_str().unwrap(), "--max-size", "2K"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("the limit is"), "{}", run.stderr);
    assert!(run.stderr.contains("2048 bytes"), "{}", run.stderr);
    let run = home.run(&["send-file", "b", file.to_str().unwrap(), "--max-size", "2T"]);
    assert_eq!(run.code, 2, "{run:?}");

    // The receiving daemon keeps files up to its own limit.
    let limited = TestHome::new();
    let init = |name: &str| {
        let status = Command::new(agentwire_bin())
            .arg("--home")
            .arg(limited.path())
            .args(["init", "--name", name])
            .env("AGENTWIRE_MAX_FILE_BYTES", "1000")
            .env_remove("AGENTWIRE_AGENT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    init("a");
    init("b");
    let run = limited.run(&["--json", "send-file", "b", file.to_str().unwrap(), "--wait"]);
    assert_eq!(run.code, 19, "{run:?}");
    assert!(
        run.stderr.contains("keeps files up to") && run.stderr.contains("1000 bytes"),
        "the contact's limit is in the error: {}",
        run.stderr
    );
    let status = limited.run(&["--json", "sent"]).ok().json();
    assert_eq!(status["messages"][0]["state"], "failed", "{status}");
    assert!(
        status["messages"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not keep the file")),
        "{status}"
    );
    assert_eq!(limited.run(&["--as", "b", "recv"]).code, 1, "nothing kept");
}

/// The daemon is killed while a file is being queued: sending it again
/// continues, and the contact gets it once, whole.
#[test]
fn an_interrupted_send_continues_when_sent_again() {
    let home = siblings();
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "big.bin", 24 << 20);
    let pid = home.run(&["--json", "daemon", "status"]).ok().json()["pid"]
        .as_u64()
        .unwrap();
    let mut sending = Command::new(agentwire_bin())
        .arg("--home")
        .arg(home.path())
        .args(["send-file", "b", file.to_str().unwrap()])
        .env_remove("AGENTWIRE_AGENT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let _ = sending.wait();
    let again = home
        .run(&[
            "--json",
            "send-file",
            "b",
            file.to_str().unwrap(),
            "--wait",
            "--timeout",
            "5m",
        ])
        .ok()
        .json();
    println!(
        "resumed: {} of {} parts queued by the second send",
        again["file"]["queued_now"], again["file"]["parts"]
    );
    assert_eq!(again["state"]["state"], "delivered", "{again}");
    let files = received(&home, 1);
    assert_eq!(files.len(), 1, "{files:?}");
    let saved = files[0]["file"]["path"].as_str().unwrap();
    assert_eq!(sha256(Path::new(saved)), sha256(&file));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(home.run(&["--as", "b", "recv"]).code, 1, "one file, once");
}
