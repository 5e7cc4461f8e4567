//! Finding the `agentwire` binary the benchmarks drive, and reading what a
//! relay process it started says first.

use std::path::PathBuf;

/// `given`, or the `agentwire` next to this program; an error that says how
/// to build it when it is not there.
pub(crate) fn agentwire_exe(
    given: Option<&PathBuf>,
) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    let exe = match given {
        Some(exe) => exe.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("no directory for this program")?
            .join("agentwire"),
    };
    if !exe.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --release -p agentwire) or pass --exe",
            exe.display()
        )
        .into());
    }
    Ok(exe)
}

/// The JSON line a `relay --json` child prints once it listens.
pub(crate) async fn startup_line(
    child: &mut std::process::Child,
) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
    let stdout = child.stdout.take().ok_or("no relay stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await??;
    Ok(serde_json::from_str(&line)?)
}
