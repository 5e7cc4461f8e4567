//! `send_file`, and what the receive pipeline does with files: parts
//! written at their place in a partial file as they arrive, and the offer
//! that ends the transfer, checked (every part there, the size, the
//! SHA-256) before the file is kept under a safe, new name in the
//! identity's directory of received files.
//!
//! A send is resumable: the file's id comes from its contents and the
//! contact, and the store counts the parts queued, so sending the same file
//! to the same contact again continues where an interrupted send stopped.
//! Everything queued survives restarts in the outbox, as any message does.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentwire_session::file::{
    FileOffer, FilePart, MAX_FILE_BYTES, PART_BYTES, parts_for, safe_file_name,
};
use agentwire_session::{Kind, Name, Priority};
use agentwire_wire::PublicKey;
use sha2::{Digest, Sha256};

use crate::api::{
    ApiError, ContactState, DeliveryState, ErrorCode, FileSent, FileView, SendFile, internal,
};
use crate::core::Daemon;
use crate::ops::Run;
use crate::receive::control_with;
use crate::store::{Direction, StoredMessage};

/// The largest file sent or kept unless told otherwise (64 MiB).
pub(crate) const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

/// The largest file this daemon keeps: `AGENTWIRE_MAX_FILE_BYTES`, or
/// [`DEFAULT_MAX_FILE_BYTES`]; never over 1 GiB.
pub(crate) fn receive_limit() -> u64 {
    std::env::var("AGENTWIRE_MAX_FILE_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|limit| *limit > 0)
        .unwrap_or(DEFAULT_MAX_FILE_BYTES)
        .min(MAX_FILE_BYTES)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A size for people: bytes, KiB, MiB or GiB.
fn mib(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.1} GiB", b / 1_073_741_824.0),
    }
}

impl Run for SendFile {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<FileSent, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let limit = self.max_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES);
        if limit == 0 || limit > MAX_FILE_BYTES {
            return Err(ApiError::invalid(format!(
                "the size limit is 1 byte to {} (1 GiB)",
                MAX_FILE_BYTES
            )));
        }
        let path = PathBuf::from(&self.path);
        if !path.is_absolute() {
            return Err(ApiError::invalid(format!(
                "{:?} is not an absolute path (the daemon reads the file)",
                self.path
            )));
        }
        let contact = daemon.resolve_peer(&name, &self.to).await?;
        if contact.state != ContactState::Active {
            return Err(ApiError::new(
                ErrorCode::ContactRemoved,
                format!(
                    "{} is not an active contact ({})",
                    contact.petname, contact.state
                ),
            ));
        }
        // First pass: size and hash, which name the file.
        let hashed = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || hash_file(&path, limit))
                .await
                .map_err(|e| internal("cannot read the file", e))??
        };
        let (size, sha256) = hashed;
        let parts = parts_for(size);
        let given_name = match self.name {
            Some(name) if name.len() > agentwire_session::file::MAX_FILE_NAME => {
                return Err(ApiError::invalid(format!(
                    "the name is {} bytes; at most {}",
                    name.len(),
                    agentwire_session::file::MAX_FILE_NAME
                )));
            }
            Some(name) => name,
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into()),
        };
        let key = file_key(&contact.address, &sha256, &given_name);
        let owner = name.clone();
        let progress = daemon
            .db
            .run(move |tx| tx.outgoing_file(&owner, &key))
            .await?;
        // An interrupted send of this very file goes on; otherwise (none,
        // or the last one finished) this is a new transfer.
        let (file_id, done) = match progress {
            Some((transfer, done, None)) => (transfer, done),
            _ => (*agentwire_session::MessageId::new_v7().as_bytes(), 0),
        };
        let sent = |id: String, queued_now| FileSent {
            id,
            to: contact.petname.as_str().to_owned(),
            name: given_name.clone(),
            size,
            sha256: hex(&sha256),
            parts,
            queued_now,
        };
        let room = daemon
            .outbox_limit
            .saturating_sub(daemon.outbox_depth.get(&name).unwrap_or(0));
        if parts.saturating_sub(done) + 1 > room {
            return Err(ApiError::new(
                ErrorCode::OutboxFull,
                format!(
                    "the file takes {} more messages and the outbox has room for {room}; wait until it drains (`agentwire status`)",
                    parts.saturating_sub(done) + 1
                ),
            ));
        }
        // Second pass: the parts not queued yet, each sealed and queued with
        // the count of parts queued, then the offer.
        let mut file = std::fs::File::open(&path)
            .map_err(|e| ApiError::invalid(format!("cannot open {}: {e}", path.display())))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; PART_BYTES];
        for index in 0..parts {
            let read = read_part(&mut file, &mut buffer)
                .map_err(|e| ApiError::invalid(format!("cannot read {}: {e}", path.display())))?;
            hasher.update(&buffer[..read]);
            if index < done {
                continue;
            }
            let part = FilePart {
                file_id,
                index: u32::try_from(index).unwrap_or(u32::MAX),
                data: buffer[..read].to_vec(),
            };
            let sealed = daemon
                .seal_for(&name, &contact.address, move |id, now| {
                    control_with(id, Kind::FilePart, part.encode(), now)
                })
                .await?;
            let (owner, peer) = (name.clone(), contact.address);
            daemon
                .queue_sealed(&name, sealed, move |tx, plaintext, payload| {
                    let message = StoredMessage::outgoing_control(
                        plaintext.id,
                        peer,
                        Kind::FilePart,
                        plaintext.sent_at_ms,
                    );
                    tx.insert_message(&owner, &message, Some(payload))?;
                    tx.note_outgoing_file(&owner, &key, &file_id, &peer, index + 1, None)?;
                    Ok::<_, ApiError>(())
                })
                .await?;
        }
        let read_sha: [u8; 32] = hasher.finalize().into();
        if read_sha != sha256 {
            return Err(ApiError::invalid(format!(
                "{} changed while it was being sent; send it again",
                path.display()
            )));
        }
        let offer = FileOffer {
            file_id,
            size,
            sha256,
            name: given_name.clone(),
        };
        let body = offer.encode();
        let local = file_body(&offer, &path.display().to_string());
        let sealed = daemon
            .seal_for(&name, &contact.address, move |id, now| {
                control_with(id, Kind::File, body, now)
            })
            .await?;
        let (owner, peer) = (name.clone(), contact.address);
        let id = daemon
            .queue_sealed(&name, sealed, move |tx, plaintext, payload| {
                let message = StoredMessage {
                    id: plaintext.id,
                    direction: Direction::Out,
                    peer,
                    kind: Kind::File,
                    priority: Priority::Normal,
                    reply_to: None,
                    thread: None,
                    sent_at_ms: plaintext.sent_at_ms,
                    stored_at_ms: plaintext.sent_at_ms,
                    body: local,
                    state: DeliveryState::Queued,
                    chain: None,
                };
                tx.insert_message(&owner, &message, Some(payload))?;
                tx.note_outgoing_file(&owner, &key, &file_id, &peer, parts, Some(&plaintext.id))?;
                Ok::<_, ApiError>(plaintext.id)
            })
            .await?;
        let depth = daemon.outbox_depth.get(&name).unwrap_or(0);
        daemon
            .outbox_depth
            .set(name.clone(), depth + parts.saturating_sub(done) + 1);
        tracing::info!(identity = %name, to = %contact.petname, size, parts, "file queued");
        Ok(sent(id.to_string(), parts.saturating_sub(done)))
    }
}

/// Size and SHA-256 of the file at `path`, refused over `limit`.
fn hash_file(path: &Path, limit: u64) -> Result<(u64, [u8; 32]), ApiError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ApiError::invalid(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(ApiError::invalid(format!(
            "{} is not a file",
            path.display()
        )));
    }
    if meta.len() > limit {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "{} is {} ({} bytes); the limit is {} ({limit} bytes): pass a larger --max-size (at most 1 GiB)",
                path.display(),
                mib(meta.len()),
                meta.len(),
                mib(limit)
            ),
        ));
    }
    let mut file = std::fs::File::open(path)
        .map_err(|e| ApiError::invalid(format!("cannot open {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| ApiError::invalid(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > limit {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("{} grew past the limit of {}", path.display(), mib(limit)),
            ));
        }
        hasher.update(&buffer[..n]);
    }
    Ok((size, hasher.finalize().into()))
}

/// Reads up to one part into `buffer`; how many bytes.
fn read_part(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = file.read(&mut buffer[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// What names a send for resuming it: the contact, the contents and the
/// name, so that sending the same file to the same contact again after an
/// interruption continues that transfer.
fn file_key(peer: &PublicKey, sha256: &[u8; 32], name: &str) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(b"agentwire-file-key\0");
    hasher.update(peer.as_bytes());
    hasher.update(sha256);
    hasher.update(name.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// A file message's local body: the offer, then the path (where it was
/// read from or saved to).
pub(crate) fn file_body(offer: &FileOffer, path: &str) -> Vec<u8> {
    let mut body = offer.encode();
    body.extend_from_slice(path.as_bytes());
    body
}

/// The offer and path of a file message's local body.
fn parse_file_body(body: &[u8]) -> Option<(FileOffer, String)> {
    let name_len = usize::from(u16::from_be_bytes(body.get(56..58)?.try_into().ok()?));
    let end = 58 + name_len;
    let offer = FileOffer::decode(body.get(..end)?).ok()?;
    let path = String::from_utf8_lossy(body.get(end..)?).into_owned();
    Some((offer, path))
}

/// The view of a file message's body.
pub(crate) fn file_view(body: &[u8]) -> Option<FileView> {
    parse_file_body(body).map(|(offer, path)| FileView {
        name: offer.name,
        path,
        size: offer.size,
        sha256: hex(&offer.sha256),
    })
}

/// A file message's text, for those who read only the body.
pub(crate) fn file_text(body: &[u8]) -> String {
    match parse_file_body(body) {
        Some((offer, path)) => format!(
            "file {} ({} bytes, sha256 {}) at {path}",
            offer.name,
            offer.size,
            hex(&offer.sha256)
        ),
        None => String::from_utf8_lossy(body).into_owned(),
    }
}

/// The identity's directory of received files (made 0700).
pub(crate) fn files_dir(home: &crate::Home, name: &Name) -> std::io::Result<PathBuf> {
    let dir = home.root().join("files").join(name.as_str());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join(".partial"))?;
    Ok(dir)
}

/// Drops the partial file of a transfer whose end is committed.
pub(crate) fn drop_partial(home: &crate::Home, name: &Name, peer: &PublicKey, file_id: &[u8; 16]) {
    if let Ok(dir) = files_dir(home, name) {
        let _ = std::fs::remove_file(partial_path(&dir, peer, file_id));
    }
}

fn partial_path(dir: &Path, peer: &PublicKey, file_id: &[u8; 16]) -> PathBuf {
    dir.join(".partial")
        .join(format!("{}-{}", peer.short_id(), hex(file_id)))
}

/// Writes a part at its place in its partial file, durably (before the
/// store job that records it commits).
pub(crate) fn write_part(
    home: &crate::Home,
    name: &Name,
    peer: &PublicKey,
    part: &FilePart,
) -> std::io::Result<()> {
    let dir = files_dir(home, name)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(partial_path(&dir, peer, &part.file_id))?;
    file.write_all_at(&part.data, u64::from(part.index) * PART_BYTES as u64)?;
    file.sync_data()
}

/// Ends a transfer: every part there, the size and hash right; the file
/// linked under a new, safe name. Where it is, or why it was refused (its
/// partial file is dropped then). A kept file's partial file stays until
/// the store job that records the file commits ([`drop_partial`]): if that
/// job fails, the offer comes again and finds its parts as they were.
pub(crate) fn finish_file(
    home: &crate::Home,
    name: &Name,
    peer: &PublicKey,
    offer: &FileOffer,
    parts_arrived: u64,
) -> Result<PathBuf, String> {
    let dir = files_dir(home, name).map_err(|e| format!("cannot store files: {e}"))?;
    let partial = partial_path(&dir, peer, &offer.file_id);
    let refuse = |why: String| {
        let _ = std::fs::remove_file(&partial);
        Err(why)
    };
    let limit = receive_limit();
    if offer.size > limit {
        return refuse(format!(
            "the file is {} ({} bytes); this agent keeps files up to {} ({limit} bytes)",
            mib(offer.size),
            offer.size,
            mib(limit)
        ));
    }
    let expected = parts_for(offer.size);
    if parts_arrived != expected {
        return refuse(format!(
            "{parts_arrived} of its {expected} parts arrived; send it again"
        ));
    }
    if offer.size == 0 {
        // No parts: an empty file.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| format!("cannot store the file: {e}"))?;
    }
    let verified = (|| -> std::io::Result<bool> {
        let mut file = std::fs::File::open(&partial)?;
        let len = file.seek(SeekFrom::End(0))?;
        if len != offer.size {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(0))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        Ok(digest == offer.sha256)
    })();
    match verified {
        Ok(true) => {}
        Ok(false) => {
            return refuse("its size or SHA-256 does not match what arrived".into());
        }
        Err(error) => return refuse(format!("cannot check the file: {error}")),
    }
    // A new name: never over an existing file.
    let safe = safe_file_name(&offer.name);
    let (stem, extension) = match safe.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (safe.clone(), String::new()),
    };
    for n in 1..10_000 {
        let candidate = if n == 1 {
            dir.join(&safe)
        } else {
            dir.join(format!("{stem}-{n}{extension}"))
        };
        // A hard link claims the name atomically and fails if it exists.
        match std::fs::hard_link(&partial, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return refuse(format!("cannot store the file: {error}")),
        }
    }
    refuse("no free name for the file".into())
}

/// What arrived of a file, noted with the offer: the body of the stored
/// message (the offer, then where it was saved).
pub(crate) fn received_body(offer: &FileOffer, path: &Path) -> Vec<u8> {
    file_body(offer, &path.display().to_string())
}
