//! `agentwire mcp` driven by an independent MCP client (the official Python
//! SDK, `tests/python/mcp_scenario.py`), and `agentwire setup` writing client configs
//! that start it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::*;

/// Runs the scenario script with `args`; its JSON summary.
fn scenario(args: &[&str]) -> Value {
    let output = Command::new(python())
        .arg(python_script("mcp_scenario.py"))
        .args(args)
        .env_remove("AGENTWIRE_AGENT")
        .env_remove("AGENTWIRE_HOME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no summary from the MCP client ({e}); stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success() && summary["ok"] == true,
        "MCP scenario failed: {}\nserver stderr:\n{}",
        serde_json::to_string_pretty(&summary).unwrap(),
        String::from_utf8_lossy(&output.stderr)
    );
    summary
}

fn two_siblings() -> TestHome {
    let home = TestHome::new();
    home.run(&["init", "--name", "alice"]).ok();
    home.run(&["init", "--name", "bob"]).ok();
    home
}

#[test]
fn an_independent_mcp_client_sends_waits_and_gets_pushes() {
    independent_client_scenario("2025-11-25");
}

/// The same under the revision without protocol sessions: no handshake, no
/// log notifications, `wait` and channel pushes as before.
#[test]
fn an_independent_mcp_client_without_protocol_sessions() {
    independent_client_scenario("2026-07-28");
}

fn independent_client_scenario(protocol: &str) {
    let home = two_siblings();
    let summary = scenario(&[
        "--exe",
        agentwire_bin().to_str().unwrap(),
        "--home",
        home.path().to_str().unwrap(),
        "--protocol",
        protocol,
    ]);
    println!("{summary}");
    assert_eq!(summary["protocol_version"], protocol);
    // The notice push reached a client that declared no capability (as a
    // log event only where the protocol still has them).
    let logs = summary["notifications"]["bob_logs"].as_u64().unwrap();
    if protocol == "2026-07-28" {
        assert_eq!(logs, 0);
    } else {
        assert!(logs >= 1);
    }
    assert!(summary["notifications"]["bob_channel"].as_u64().unwrap() >= 1);
    // The CLI agrees: every message alice sent was read.
    let sent = home
        .run(&["--as", "alice", "--json", "sent", "--max", "1000"])
        .ok()
        .json();
    let states: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    // 31 messages, and the result of bob's call.
    assert_eq!(states, ["read"; 32], "{sent}");
}

fn setup(home: &TestHome, cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> Run {
    let mut command = Command::new(agentwire_bin());
    command
        .arg("--home")
        .arg(home.path())
        .args(["--as", "alice", "setup"])
        .args(args)
        .current_dir(cwd)
        .env_remove("AGENTWIRE_AGENT")
        .env_remove("CODEX_HOME")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn setup_adds_an_entry_that_starts_the_server_and_keeps_the_rest() {
    let home = two_siblings();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();

    // Claude Code: a project .mcp.json that already has a server and more.
    let mcp_json = dir.join(".mcp.json");
    std::fs::write(
        &mcp_json,
        r#"{"mcpServers": {"docs": {"command": "docs-mcp", "args": ["--port", "1"]}}, "note": "mine"}"#,
    )
    .unwrap();
    let run = setup(&home, dir, &[], &["claude", "--json"]).ok();
    let report = run.json();
    assert_eq!(report["action"], "added", "{report}");
    assert_eq!(report["kept"], json!(["docs"]));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&mcp_json).unwrap()).unwrap();
    assert_eq!(written["note"], "mine");
    assert_eq!(
        written["mcpServers"]["docs"]["args"],
        json!(["--port", "1"])
    );
    let entry = &written["mcpServers"]["agentwire"];
    assert_eq!(entry["type"], "stdio");
    assert_eq!(entry["command"], agentwire_bin().to_str().unwrap());
    let summary = scenario(&[
        "--config",
        mcp_json.to_str().unwrap(),
        "--expect-name",
        "alice",
    ]);
    println!("{summary}");
    // Again: nothing to change.
    let again = setup(&home, dir, &[], &["claude", "--json"]).ok().json();
    assert_eq!(again["action"], "unchanged");
    // The re-run it suggests works as printed: same home and identity.
    let hint = setup(&home, dir, &[], &["claude"]).ok().stdout;
    let rerun = format!(
        "agentwire --home {} --as alice setup claude --push message",
        home.path().display()
    );
    assert!(hint.contains(&rerun), "{hint}");
    // A different push mode updates the entry in place.
    let text = setup(&home, dir, &[], &["claude", "--push", "message"])
        .ok()
        .stdout;
    assert!(
        text.contains("Updated")
            && text.contains("--dangerously-load-development-channels server:agentwire"),
        "{text}"
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&mcp_json).unwrap()).unwrap();
    assert_eq!(
        written["mcpServers"]["agentwire"]["args"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        "message"
    );
    assert_eq!(written["mcpServers"]["docs"]["command"], "docs-mcp");

    // Codex: the user's config.toml (under CODEX_HOME), comments and all.
    let codex_home = tempfile::tempdir().unwrap();
    let config = codex_home.path().join("config.toml");
    let original = "# my codex settings\nmodel = \"o3\"\n\n[mcp_servers.docs]\ncommand = \"docs-mcp\" # keep me\n";
    std::fs::write(&config, original).unwrap();
    let report = setup(
        &home,
        dir,
        &[("CODEX_HOME", codex_home.path())],
        &["codex", "--json"],
    )
    .ok()
    .json();
    assert_eq!(report["action"], "added", "{report}");
    assert_eq!(report["path"], config.to_str().unwrap());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with(original), "{text}");
    assert!(
        text.contains("[mcp_servers.agentwire]") && text.contains("tool_timeout_sec = 330"),
        "{text}"
    );
    scenario(&[
        "--config",
        config.to_str().unwrap(),
        "--expect-name",
        "alice",
    ]);

    // Cursor and Gemini CLI: project files, created with their directories.
    setup(&home, dir, &[], &["cursor"]).ok();
    setup(&home, dir, &[], &["gemini"]).ok();
    let cursor: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".cursor/mcp.json")).unwrap())
            .unwrap();
    assert_eq!(cursor["mcpServers"]["agentwire"]["type"], "stdio");
    let gemini_path = dir.join(".gemini/settings.json");
    let gemini: Value =
        serde_json::from_str(&std::fs::read_to_string(&gemini_path).unwrap()).unwrap();
    assert_eq!(
        gemini["mcpServers"]["agentwire"]["args"],
        json!([
            "--home",
            home.path().to_str().unwrap(),
            "--as",
            "alice",
            "mcp"
        ])
    );
    scenario(&[
        "--config",
        gemini_path.to_str().unwrap(),
        "--expect-name",
        "alice",
    ]);
}

#[test]
fn setup_refuses_a_file_it_cannot_parse_and_changes_nothing() {
    let home = TestHome::new();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    let codex_home = tempfile::tempdir().unwrap();
    let cases: [(&str, PathBuf, &str); 4] = [
        (
            "claude",
            dir.join(".mcp.json"),
            "{\"mcpServers\": {\"docs\": ",
        ),
        (
            "cursor",
            dir.join(".cursor/mcp.json"),
            "{\"mcpServers\": [\"docs\"]}",
        ),
        ("gemini", dir.join(".gemini/settings.json"), "[]"),
        (
            "codex",
            codex_home.path().join("config.toml"),
            "model = \n[mcp_servers.docs]\n",
        ),
    ];
    for (client, path, content) in cases {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        let run = setup(&home, dir, &[("CODEX_HOME", codex_home.path())], &[client]);
        assert_eq!(run.code, 3, "{client}: {run:?}");
        assert!(
            run.stderr.contains(path.to_str().unwrap()) && run.stderr.contains("left unchanged"),
            "{client}: {}",
            run.stderr
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content, "{client}");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{client}: {leftovers:?}");
    }
    // A bad entry name is a usage error.
    let run = setup(&home, dir, &[], &["claude", "--entry", "a b"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn setup_print_shows_the_entry_and_writes_nothing() {
    let home = TestHome::new();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    let run = setup(&home, dir, &[], &["claude", "--print"]).ok();
    let snippet: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        snippet["mcpServers"]["agentwire"]["command"],
        agentwire_bin().to_str().unwrap()
    );
    let codex_home = tempfile::tempdir().unwrap();
    let run = setup(
        &home,
        dir,
        &[("CODEX_HOME", codex_home.path())],
        &["codex", "--print"],
    )
    .ok();
    assert!(
        run.stdout.contains("[mcp_servers.agentwire]"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("config.toml"), "{}", run.stderr);
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(codex_home.path()).unwrap().count(), 0);
}

#[test]
fn setup_keeps_the_users_settings_links_and_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let home = TestHome::new();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();

    // The user's own keys in the agentwire entry survive an update.
    let gemini = dir.join(".gemini/settings.json");
    std::fs::create_dir_all(gemini.parent().unwrap()).unwrap();
    std::fs::write(
        &gemini,
        r#"{"mcpServers": {"agentwire": {"command": "old", "args": [], "trust": true, "env": {"X": "1"}}}}"#,
    )
    .unwrap();
    std::fs::set_permissions(&gemini, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = setup(&home, dir, &[], &["gemini", "--json"]).ok().json();
    assert_eq!(report["action"], "updated", "{report}");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&gemini).unwrap()).unwrap();
    let entry = &written["mcpServers"]["agentwire"];
    assert_eq!(entry["trust"], true, "{written}");
    assert_eq!(entry["env"]["X"], "1", "{written}");
    assert_eq!(entry["command"], agentwire_bin().to_str().unwrap());
    let mode = std::fs::metadata(&gemini).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file keeps its permissions");

    // A symlinked config (dotfiles) is written where it points, and stays a link.
    let dotfiles = tempfile::tempdir().unwrap();
    let real = dotfiles.path().join("codex.toml");
    std::fs::write(
        &real,
        "[mcp_servers.agentwire]\ncommand = \"old\"\nenabled = false # mine\n",
    )
    .unwrap();
    let codex_home = tempfile::tempdir().unwrap();
    let link = codex_home.path().join("config.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    setup(&home, dir, &[("CODEX_HOME", codex_home.path())], &["codex"]).ok();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(text.contains("enabled = false # mine"), "{text}");
    assert!(text.contains("tool_timeout_sec = 330"), "{text}");

    // Whole-message pushes are for Claude Code channels only.
    let run = setup(&home, dir, &[], &["cursor", "--push", "message"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("Claude Code channels only"),
        "{}",
        run.stderr
    );
}

#[test]
fn setup_claude_hooks_installs_a_wake_up_that_works() {
    let home = two_siblings();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    let settings = dir.join(".claude/settings.local.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    std::fs::write(
        &settings,
        r#"{"permissions": {"allow": ["Bash(ls)"]}, "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "echo other"}]}]}}"#,
    )
    .unwrap();
    let report = setup(&home, dir, &[], &["claude", "--hooks", "--json"])
        .ok()
        .json();
    assert_eq!(report["hooks"]["action"], "added", "{report}");
    assert_eq!(report["hooks"]["path"], settings.to_str().unwrap());
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(written["permissions"]["allow"][0], "Bash(ls)");
    let stop = written["hooks"]["Stop"].as_array().unwrap();
    assert_eq!(stop.len(), 2, "{written}");
    assert_eq!(stop[0]["hooks"][0]["command"], "echo other");
    let command = written["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(stop[1]["hooks"][0]["command"], command.as_str());
    assert!(command.ends_with("--as alice hook claude"), "{command}");
    // Again: nothing added twice.
    let again = setup(&home, dir, &[], &["claude", "--hooks", "--json"])
        .ok()
        .json();
    assert_eq!(again["hooks"]["action"], "unchanged", "{again}");

    // The installed command is a working wake-up: with mail waiting, Claude
    // Code's prompt hook gets it as additional context, framed.
    home.run(&["--as", "bob", "send", "alice", "tests are green"])
        .ok();
    assert!(eventually(|| home
        .run(&["--as", "alice", "--json", "inbox"])
        .stdout
        .contains("tests are green")));
    let mut child = Command::new("sh")
        .args(["-c", &command])
        .env_remove("AGENTWIRE_AGENT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"hook_event_name":"UserPromptSubmit"}"#)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hook: Value = serde_json::from_slice(&output.stdout).unwrap();
    let context = hook["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        context.contains("tests are green") && context.contains(r#"from="bob""#),
        "{context}"
    );

    // Hooks are a Claude Code thing.
    let run = setup(&home, dir, &[], &["codex", "--hooks"]);
    assert_eq!(run.code, 2, "{run:?}");
}

/// Finding: `setup claude --hooks` followed a symlinked `.claude` directory
/// out of the project (a cloned repository could aim it anywhere).
#[test]
fn setup_never_follows_a_link_out_of_the_project() {
    let home = TestHome::new();
    let project = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::os::unix::fs::symlink(elsewhere.path(), dir.join(".claude")).unwrap();
    let run = setup(&home, dir, &[], &["claude", "--hooks"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("leads out of the project"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    assert!(!dir.join(".mcp.json").exists(), "nothing was written");
    // The same for the MCP config file itself.
    std::fs::remove_file(dir.join(".claude")).unwrap();
    let outside = elsewhere.path().join("mcp.json");
    std::fs::write(&outside, "{}").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join(".mcp.json")).unwrap();
    let run = setup(&home, dir, &[], &["claude"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "{}");
    // A link that stays inside the project is fine.
    std::fs::remove_file(dir.join(".mcp.json")).unwrap();
    std::fs::create_dir(dir.join("shared")).unwrap();
    std::os::unix::fs::symlink(dir.join("shared"), dir.join(".claude")).unwrap();
    setup(&home, dir, &[], &["claude", "--hooks"]).ok();
    assert!(dir.join("shared/settings.local.json").exists());
}
