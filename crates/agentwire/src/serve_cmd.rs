//! `agentwire serve --on-message CMD`: an identity that answers on its own.
//! Each chat or task message that arrives runs CMD once (`sh -c`), the body
//! on its stdin and the context in environment variables; CMD's stdout goes
//! back as the reply (for a task, as its result). A task moves through
//! `working` to `completed`, or `failed` with the exit code and the end of
//! stderr; one that does not fit in the queue is `rejected` with the reason.
//!
//! Bounds: `--concurrency` commands at once, `--queue` waiting, `--timeout`
//! each, `--rate` messages a minute from one contact. Replies never answer a
//! `result` (serve takes only chat and task messages), an empty output sends
//! nothing, and a message `--max-hops` replies or more into a chain of
//! replies (counted inside the encryption, see `agentwire_session::Chain`)
//! is not answered, so two bots cannot feed each other without end.
//!
//! A message is taken (marked read) when its command starts, so one that
//! waits in the queue when serve stops stays unread for the next run.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_daemon::api::{self, Event, Kind, MessageView, TaskState};
use agentwire_daemon::{ClientError, DaemonClient, Home};
use anyhow::{Context, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cli::{ServeArgs, ServePreset};
use crate::exit::{CONFIG, Failure, USAGE, WithCode};

/// Most bytes of stdout sent back (a message body's limit).
const MAX_OUTPUT: usize = 128 * 1024;
/// How much of stderr a failure report quotes, in bytes.
const STDERR_TAIL: usize = 2048;
/// How long running commands get to finish after SIGTERM before they are
/// stopped and their tasks failed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Message ids remembered as handled (a re-subscription shows the unread
/// ones again).
const HANDLED_MEMORY: usize = 10_000;

/// The command a preset stands for.
fn preset_command(preset: ServePreset) -> &'static str {
    match preset {
        ServePreset::Claude => "claude -p --output-format text",
        ServePreset::Codex => "codex exec --skip-git-repo-check -",
    }
}

/// One message to run the command for.
struct Job {
    message: MessageView,
}

/// What the serve loop shares with its workers.
struct Shared {
    client: DaemonClient,
    identity: Option<String>,
    command: String,
    timeout: Duration,
    workdir: Option<PathBuf>,
    /// Confines each command to its directory (with --workdir).
    sandbox: Option<crate::sandbox::Sandbox>,
    /// Running tasks' stop switches, by task id (a cancel stops the command).
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Set on SIGTERM/SIGINT: running commands get [`STOP_GRACE`], then stop.
    stopping: CancellationToken,
}

pub(crate) fn run(
    home_flag: Option<&Path>,
    identity: Option<String>,
    args: ServeArgs,
) -> Result<(), Failure> {
    let command = match (&args.on_message, args.preset) {
        (Some(command), None) => command.clone(),
        (None, Some(preset)) => preset_command(preset).to_owned(),
        _ => {
            return Err(Failure::new(
                USAGE,
                anyhow!("give the command to run: --on-message CMD, or --preset claude|codex"),
            ));
        }
    };
    let home = Home::resolve(home_flag).code(CONFIG)?;
    if let Some(dir) = &args.workdir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the work directory {}", dir.display()))
            .code(CONFIG)?;
    }
    if std::os::unix::net::UnixStream::connect(home.socket()).is_err() {
        crate::daemon_client::start(&home)?;
    }
    let runtime = crate::runtime(Some(2))?;
    let sandbox = match &args.workdir {
        Some(dir) if !args.no_isolation => {
            let sandbox = crate::sandbox::for_serve(&args.allow_write)?;
            let dir = std::fs::canonicalize(dir)
                .with_context(|| format!("cannot resolve {}", dir.display()))
                .code(CONFIG)?;
            runtime.block_on(sandbox.probe(&dir)).map_err(|why| {
                Failure::new(
                    CONFIG,
                    anyhow!(
                        "--workdir confines each command to its directory with user and mount namespaces (unshare(1) from util-linux), and that does not work here: {why}. Allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces), or pass --no-isolation to run commands in their directories unconfined"
                    ),
                )
            })?;
            Some(sandbox)
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        client: DaemonClient::socket(home.socket()),
        identity,
        command,
        timeout: args.timeout,
        workdir: args.workdir.clone(),
        sandbox,
        running: Mutex::new(HashMap::new()),
        stopping: CancellationToken::new(),
    });
    runtime.block_on(serve(shared, args))
}

async fn serve(shared: Arc<Shared>, args: ServeArgs) -> Result<(), Failure> {
    let (queue, jobs) = mpsc::channel::<Job>(args.queue);
    let workers = tokio::spawn(work(shared.clone(), jobs, args.concurrency));
    let mut handled = agentwire_daemon::RecentIds::new(HANDLED_MEMORY);
    let mut rate = Rate::new(args.rate);
    let max_hops = args.max_hops;
    let mut announced = false;
    let stop = crate::relay_cmd::shutdown_signal();
    tokio::pin!(stop);
    let mut delay = Duration::from_millis(200);
    'subscribe: loop {
        let request = api::Subscribe {
            identity: shared.identity.clone(),
        };
        let mut events = tokio::select! {
            events = shared.client.subscribe(request) => match events {
                Ok(events) => events,
                Err(ClientError::Refused(error)) => {
                    return Err(Failure::new(crate::daemon_client::exit_code(error.code), anyhow!(error.message)));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot follow the daemon; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = &mut stop => break 'subscribe,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            () = &mut stop => break 'subscribe,
        };
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = &mut stop => break 'subscribe,
            };
            match event {
                Ok(Some(Event::Ready { identity })) => {
                    delay = Duration::from_millis(200);
                    if !announced {
                        eprintln!(
                            "agentwire serve: {identity} answers chat and task messages with {:?} ({} at once, {} queued at most); Ctrl-C stops",
                            shared.command, args.concurrency, args.queue
                        );
                        announced = true;
                    }
                }
                Ok(Some(Event::Message { message })) => {
                    if matches!(message.kind, Kind::Chat | Kind::Task)
                        && handled.insert(&message.id)
                    {
                        if message.hops >= max_hops {
                            let reason = format!(
                                "this message is {} replies into a chain; this agent answers at most {} (--max-hops), so that agents cannot answer each other for ever",
                                message.hops,
                                max_hops.saturating_sub(1)
                            );
                            refuse(&shared, message, reason).await;
                        } else {
                            offer(&shared, &queue, &mut rate, message).await;
                        }
                    }
                }
                Ok(Some(Event::Task(task))) if task.state == TaskState::Canceled => {
                    let token = shared
                        .running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&task.id)
                        .cloned();
                    if let Some(token) = token {
                        token.cancel();
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    tracing::info!("the daemon closed the subscription; following it again");
                    continue 'subscribe;
                }
            }
        }
    }
    // Stopping: nothing new starts; what runs gets a grace period.
    eprintln!(
        "agentwire serve: stopping; running commands get {} s",
        STOP_GRACE.as_secs()
    );
    drop(queue);
    shared.stopping.cancel();
    let _ = workers.await;
    Ok(())
}

/// Queues a message, or turns it away: a task is answered `rejected` with
/// the reason; a chat message stays unread.
async fn offer(shared: &Shared, queue: &mpsc::Sender<Job>, rate: &mut Rate, message: MessageView) {
    if !rate.allow(&message.from.short_id) {
        let reason = format!(
            "too many messages from you: this agent runs at most {} a minute per contact",
            rate.per_minute
        );
        return refuse(shared, message, reason).await;
    }
    match queue.try_send(Job { message }) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(job)) => {
            let reason = format!(
                "this agent is busy: its queue of {} is full; try again later",
                queue.max_capacity()
            );
            refuse(shared, job.message, reason).await;
        }
    }
}

async fn refuse(shared: &Shared, message: MessageView, reason: String) {
    tracing::info!(id = %message.id, %reason, "turned a message away");
    if message.kind == Kind::Task {
        report(shared, &message.id, TaskState::Rejected, Some(reason), None).await;
        take(shared, &message.id).await;
    }
}

/// Runs queued jobs, `concurrency` at once, until the queue closes; then
/// waits for the running ones.
async fn work(shared: Arc<Shared>, mut jobs: mpsc::Receiver<Job>, concurrency: usize) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut running = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let job = tokio::select! {
            job = jobs.recv() => job,
            () = shared.stopping.cancelled() => None,
        };
        let Some(job) = job else { break };
        let shared = shared.clone();
        running.spawn(async move {
            handle(&shared, job.message).await;
            drop(permit);
        });
        // Reap what finished, so the set does not grow.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Runs the command for one message and sends what it says back.
async fn handle(shared: &Shared, message: MessageView) {
    // Taken now: another reader (or this serve, after a restart) does not
    // run it again.
    if !take(shared, &message.id).await {
        return;
    }
    let is_task = message.kind == Kind::Task;
    let cancel = CancellationToken::new();
    if is_task {
        shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(message.id.clone(), cancel.clone());
        report(shared, &message.id, TaskState::Working, None, None).await;
    }
    let ran = run_command(shared, &message, &cancel).await;
    if is_task {
        shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&message.id);
    }
    let from = message.from.short_id.clone();
    match ran {
        Ran::Output(output) if is_task => {
            report(
                shared,
                &message.id,
                TaskState::Completed,
                None,
                Some(output),
            )
            .await;
        }
        Ran::Output(output) if output.trim().is_empty() => {
            tracing::info!(id = %message.id, "the command printed nothing: no reply");
        }
        Ran::Output(output) => reply(shared, &message, output).await,
        Ran::Canceled => {
            tracing::info!(id = %message.id, "canceled by its requester; command stopped")
        }
        Ran::Failed(why) => {
            tracing::warn!(id = %message.id, %from, %why, "the command failed");
            if is_task {
                report(shared, &message.id, TaskState::Failed, Some(why), None).await;
            }
        }
    }
}

enum Ran {
    Output(String),
    Failed(String),
    Canceled,
}

async fn run_command(shared: &Shared, message: &MessageView, cancel: &CancellationToken) -> Ran {
    let dir = match &shared.workdir {
        Some(root) => match caller_dir(root, &message.from.short_id) {
            Ok(dir) => Some(dir),
            Err(error) => return Ran::Failed(format!("no work directory for you: {error}")),
        },
        None => None,
    };
    let mut command = match (&shared.sandbox, &dir) {
        (Some(sandbox), Some(dir)) => match std::fs::canonicalize(dir) {
            Ok(dir) => sandbox.command(&dir, &shared.command),
            Err(error) => return Ran::Failed(format!("no work directory for you: {error}")),
        },
        _ => {
            let mut plain = tokio::process::Command::new("sh");
            plain.args(["-c", &shared.command]);
            if let Some(dir) = &dir {
                plain.current_dir(dir);
            }
            plain
        }
    };
    command
        .process_group(0)
        .kill_on_drop(true)
        .env("AGENTWIRE_MESSAGE_ID", &message.id)
        .env("AGENTWIRE_FROM", message.from.name.as_deref().unwrap_or(""))
        .env("AGENTWIRE_FROM_KEY", &message.from.short_id)
        .env("AGENTWIRE_KIND", message.kind.name())
        .env("AGENTWIRE_HOPS", message.hops.to_string())
        .env(
            "AGENTWIRE_THREAD",
            message.thread.as_deref().unwrap_or(&message.id),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if message.kind == Kind::Task {
        command.env("AGENTWIRE_TASK_ID", &message.id);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Ran::Failed(format!("cannot run {:?}: {error}", shared.command)),
    };
    let pid = child.id();
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let body = message.body.clone().into_bytes();
    // The body is written while the output is read: a command that never
    // reads its stdin, or answers before reading it all, does not block.
    let write = async move {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&body).await;
        }
    };
    let task = (message.kind == Kind::Task).then_some(message.id.as_str());
    let read_out = read_streaming(shared, task, stdout, MAX_OUTPUT);
    let read_err = read_tail(stderr, STDERR_TAIL);
    let wait = async {
        let ((), out, err, status) = tokio::join!(write, read_out, read_err, child.wait());
        (out, err, status)
    };
    let grace = async {
        shared.stopping.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    let outcome = tokio::select! {
        done = wait => Some(done),
        () = tokio::time::sleep(shared.timeout) => {
            kill_group(pid);
            return Ran::Failed(format!("timed out after {}", humantime::format_duration(shared.timeout)));
        }
        () = cancel.cancelled() => {
            kill_group(pid);
            return Ran::Canceled;
        }
        () = grace => None,
    };
    let Some((out, err, status)) = outcome else {
        kill_group(pid);
        return Ran::Failed(
            "the agent stopped (serve was shut down) before the command finished".into(),
        );
    };
    match status {
        Ok(status) if status.success() => match out {
            Ok((text, false)) => Ran::Output(text),
            Ok((_, true)) => Ran::Failed(format!(
                "the output is over {} KiB, the most a reply carries",
                MAX_OUTPUT / 1024
            )),
            Err(error) => Ran::Failed(format!("cannot read the command's output: {error}")),
        },
        Ok(status) => {
            let code = status.code().map_or_else(
                || "killed by a signal".to_owned(),
                |c| format!("exit code {c}"),
            );
            let tail = err.unwrap_or_default();
            let tail = tail.trim();
            if tail.is_empty() {
                Ran::Failed(code)
            } else {
                Ran::Failed(format!("{code}: {tail}"))
            }
        }
        Err(error) => Ran::Failed(format!("cannot wait for the command: {error}")),
    }
}

/// Stops a command and everything it started (its process group).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // std has no killpg: the group is signalled by `kill -- -PGID`.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Reads at most `limit` bytes of the command's output (as UTF-8, lossily);
/// whether there was more. For a task, each complete line (or 16 KiB
/// without one) is streamed to the requester as it comes: in order, the
/// pieces make up exactly the output that the result carries.
async fn read_streaming(
    shared: &Shared,
    task: Option<&str>,
    pipe: Option<tokio::process::ChildStdout>,
    limit: usize,
) -> std::io::Result<(String, bool)> {
    let Some(mut pipe) = pipe else {
        return Ok((String::new(), false));
    };
    let mut bytes = Vec::new();
    let mut streamed = 0;
    let mut streaming = task.is_some();
    let mut buffer = [0u8; 8192];
    loop {
        let n = pipe.read(&mut buffer).await?;
        let done = n == 0;
        let room = (limit + 1).saturating_sub(bytes.len());
        bytes.extend_from_slice(&buffer[..n.min(room)]);
        if bytes.len() > limit {
            // Over the limit: the task fails; drain the rest so the command
            // is not blocked on a full pipe.
            let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
            return Ok((String::new(), true));
        }
        if let (true, Some(task)) = (streaming, task) {
            while let Some(end) = next_piece(&bytes[streamed..], done) {
                let text = String::from_utf8_lossy(&bytes[streamed..streamed + end]).into_owned();
                streamed += end;
                let sent = shared
                    .client
                    .call(api::Stream {
                        identity: shared.identity.clone(),
                        id: task.to_owned(),
                        text,
                    })
                    .await;
                if let Err(error) = sent {
                    tracing::warn!(%task, %error, "cannot stream the output; the result will carry it");
                    streaming = false;
                    break;
                }
            }
        }
        if done {
            return Ok((String::from_utf8_lossy(&bytes).into_owned(), false));
        }
    }
}

/// How much of `pending` output to stream now: up to its last newline, or
/// [`agentwire_session::MAX_CHUNK_BYTES`] (cut before a UTF-8 continuation
/// byte), or all of it at the end; `None` to wait for more.
fn next_piece(pending: &[u8], at_end: bool) -> Option<usize> {
    let max = agentwire_session::MAX_CHUNK_BYTES;
    if pending.is_empty() {
        return None;
    }
    let window = &pending[..pending.len().min(max)];
    if let Some(newline) = window.iter().rposition(|b| *b == b'\n') {
        return Some(newline + 1);
    }
    if pending.len() >= max {
        let mut end = max;
        while end > 1 && pending[end] & 0xc0 == 0x80 {
            end -= 1;
        }
        return Some(end);
    }
    at_end.then_some(pending.len())
}

/// The last `limit` bytes of a pipe, as text.
async fn read_tail(
    pipe: Option<tokio::process::ChildStderr>,
    limit: usize,
) -> std::io::Result<String> {
    let Some(mut pipe) = pipe else {
        return Ok(String::new());
    };
    let mut tail = VecDeque::with_capacity(limit);
    let mut buffer = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        for &byte in &buffer[..n] {
            if tail.len() == limit {
                tail.pop_front();
            }
            tail.push_back(byte);
        }
    }
    let bytes: Vec<u8> = tail.into_iter().collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The caller's own directory under `root`: a real directory (made 0700 if
/// new), never a link.
fn caller_dir(root: &Path, caller: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if caller.is_empty() || !caller.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(std::io::Error::other("the sender's key id is not hex"));
    }
    let dir = root.join(caller);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.file_type().is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of its own (a link or a file)",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Takes a message (marks it read); whether this serve got it.
async fn take(shared: &Shared, id: &str) -> bool {
    let ack = api::Ack {
        identity: shared.identity.clone(),
        ids: vec![id.to_owned()],
    };
    match shared.client.call(ack).await {
        Ok(acked) => !acked.acked.is_empty(),
        Err(error) => {
            tracing::warn!(%error, %id, "cannot take a message");
            false
        }
    }
}

async fn report(
    shared: &Shared,
    id: &str,
    state: TaskState,
    detail: Option<String>,
    result: Option<String>,
) {
    let update = api::UpdateTask {
        identity: shared.identity.clone(),
        id: id.to_owned(),
        state,
        detail,
        result,
    };
    if let Err(error) = shared.client.call(update).await {
        tracing::warn!(%error, %id, %state, "cannot report on a task");
    }
}

/// Answers a chat message with the command's output, in its thread.
async fn reply(shared: &Shared, message: &MessageView, output: String) {
    let to = message
        .from
        .name
        .clone()
        .unwrap_or_else(|| message.from.short_id.clone());
    let send = api::SendMessage {
        identity: shared.identity.clone(),
        to,
        body: output,
        kind: Some(Kind::Chat),
        reply_to: Some(message.id.clone()),
        thread: Some(message.thread.clone().unwrap_or_else(|| message.id.clone())),
        ..api::SendMessage::default()
    };
    if let Err(error) = shared.client.call(send).await {
        tracing::warn!(%error, id = %message.id, "cannot send the reply");
    }
}

/// Messages a minute per contact, in a sliding window.
struct Rate {
    per_minute: u32,
    seen: HashMap<String, VecDeque<Instant>>,
}

impl Rate {
    fn new(per_minute: u32) -> Rate {
        Rate {
            per_minute,
            seen: HashMap::new(),
        }
    }

    fn allow(&mut self, contact: &str) -> bool {
        let now = Instant::now();
        let times = self.seen.entry(contact.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            times.pop_front();
        }
        if times.len() >= self.per_minute as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_streams_in_lines_and_bounded_pieces_that_add_up() {
        assert_eq!(next_piece(b"", true), None);
        assert_eq!(next_piece(b"partial", false), None);
        assert_eq!(next_piece(b"partial", true), Some(7));
        assert_eq!(next_piece(b"one\ntwo\nthr", false), Some(8));
        let max = agentwire_session::MAX_CHUNK_BYTES;
        let long = "é".repeat(max);
        let end = next_piece(long.as_bytes(), false).unwrap();
        assert!(end <= max && long.is_char_boundary(end), "{end}");
        // Pieces taken one after another cover the output exactly.
        let output = format!("a\n{long}\nb");
        let (bytes, mut at, mut pieces) = (output.as_bytes(), 0, Vec::new());
        while let Some(end) = next_piece(&bytes[at..], true) {
            pieces.push(std::str::from_utf8(&bytes[at..at + end]).unwrap());
            at += end;
        }
        assert_eq!(pieces.concat(), output);
        assert!(pieces.iter().all(|p| p.len() <= max));
    }

    #[test]
    fn the_rate_bounds_each_contact_alone() {
        let mut rate = Rate::new(2);
        assert!(rate.allow("a") && rate.allow("a"));
        assert!(!rate.allow("a"));
        assert!(rate.allow("b"));
    }

    #[test]
    fn a_caller_dir_is_a_real_directory_never_a_link() {
        let root = tempfile::tempdir().unwrap();
        let dir = caller_dir(root.path(), "3f9a2c1b").unwrap();
        assert!(dir.is_dir());
        assert!(caller_dir(root.path(), "../etc").is_err());
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("deadbeef")).unwrap();
        assert!(caller_dir(root.path(), "deadbeef").is_err());
    }
}
