//! The README's quickstart and walkthroughs, run exactly as written (the
//! `agentwire` on the PATH, a fresh home through `AGENTWIRE_HOME`), so that
//! the README cannot drift from the program. Each command must succeed and
//! print what its comment shows, ids and times aside.

use std::process::Command;

use crate::util::*;

#[test]
fn the_readme_quickstart_works_as_written() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme
        .split("## 60-second quickstart")
        .nth(1)
        .expect("the README has a quickstart section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the quickstart has a sh block");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let bin_dir = agentwire_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for line in block.lines() {
        let (command, shown) = line
            .split_once(" # ")
            .map_or((line.trim(), ""), |(c, s)| (c.trim(), s.trim()));
        if command.is_empty() {
            continue;
        }
        let output = Command::new("sh")
            .args(["-c", command])
            .env("PATH", &path)
            .env("AGENTWIRE_HOME", &home)
            .env_remove("AGENTWIRE_AGENT")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command}: {output:?}");
        for word in shown.split_whitespace().filter(|w| !varies(w)) {
            assert!(
                stdout.contains(word),
                "{command}: the README shows {shown:?}, the program printed {stdout:?}"
            );
        }
        ran += 1;
    }
    assert!(ran >= 4, "only {ran} commands in the quickstart");
    // The walkthroughs go on in the quickstart's home.
    for heading in [
        "## A bot that answers: `agentwire serve`",
        "## Delegating a task",
        "## Being found: cards and the relay directory",
    ] {
        run_script(&readme, heading, &home, &path);
    }
    let _ = Command::new(agentwire_bin())
        .args(["daemon", "stop"])
        .env("AGENTWIRE_HOME", &home)
        .output();
}

/// Runs the first `sh` block under `heading` as one script (`sh -e`: shell
/// variables and background jobs work as they would for a reader), in its
/// own process group, which is stopped at the end (a `serve &` keeps
/// running otherwise). Everything the comments show must be in its output.
fn run_script(readme: &str, heading: &str, home: &std::path::Path, path: &str) {
    use std::os::unix::process::CommandExt;
    let block = readme
        .split(heading)
        .nth(1)
        .and_then(|section| section.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("the README has a sh block under {heading}"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = Command::new("sh")
        .args(["-ec", block])
        .env("PATH", path)
        .env("AGENTWIRE_HOME", home)
        .env_remove("AGENTWIRE_AGENT")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{heading}: did not end"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .status();
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(
        status.success(),
        "{heading}: {status:?}; printed {stdout:?}"
    );
    for line in block.lines() {
        let Some((command, shown)) = line.split_once(" # ") else {
            continue;
        };
        for word in shown.split_whitespace().filter(|w| !varies(w)) {
            assert!(
                stdout.contains(word),
                "{heading}: `{}` shows {shown:?}; the block printed {stdout:?}",
                command.trim()
            );
        }
    }
}

/// Words of a shown output that differ from run to run: ids (`48ccfd23`,
/// `01a215a5-…`) and a sender with its id (`planner(48ccfd23)`).
fn varies(word: &str) -> bool {
    word.contains('…')
        || word.contains('(') && !word.starts_with('(')
        || word.len() == 8 && word.chars().all(|c| c.is_ascii_hexdigit())
}
