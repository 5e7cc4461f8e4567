//! Finding the `agentwire` binary the benchmarks drive.

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
