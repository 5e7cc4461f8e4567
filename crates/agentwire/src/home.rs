//! The agentwire home: the directory that holds a user's state
//! (`--home`, `AGENTWIRE_HOME`, default `~/.agentwire`). Created 0700.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Resolves the home directory without creating it.
pub(crate) fn resolve(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_path_buf());
    }
    let Some(user_home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        bail!(
            "cannot find the home directory: HOME is not set; pass --home DIR or set AGENTWIRE_HOME"
        );
    };
    Ok(PathBuf::from(user_home).join(".agentwire"))
}

/// Creates the home (mode 0700) if missing; refuses a home that others can
/// read or write.
pub(crate) fn ensure(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("cannot create the agentwire home {}", path.display()))?;
    }
    let meta = fs::metadata(path)
        .with_context(|| format!("cannot read the agentwire home {}", path.display()))?;
    if !meta.is_dir() {
        bail!("the agentwire home {} is not a directory", path.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the agentwire home {} has mode {mode:o}; it must be private: run `chmod 700 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}
