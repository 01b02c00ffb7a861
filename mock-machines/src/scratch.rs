//! Each machine's private scratch root: the stand-in for its root
//! filesystem. Fly boots a stopped machine fresh from its image ("start"
//! resets the rootfs), so the mock wipes the machine's scratch root on
//! every boot: a file one run wrote is never seen by the next, which is
//! what makes a warm pool of reused machines as isolated as fresh ones.
//!
//! A machine's process gets its root as `$HOME` and `$TMPDIR` (the host
//! filesystem still plays the image). Roots live under one directory per
//! mock server, removed when the server shuts down.

use std::io;
use std::path::{Path, PathBuf};

/// The directory holding every machine's scratch root.
pub struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// Roots go under a fresh directory named after this process and `tag`.
    pub fn new(tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!("mock-machines-{}-{tag}", std::process::id()));
        Self { root }
    }

    /// The scratch root of `machine_id` (not created).
    pub fn path_of(&self, machine_id: &str) -> PathBuf {
        self.root.join(machine_id)
    }

    /// Removes every machine's root.
    pub fn remove_all(&self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Empties `path` (creating it if needed): a boot starts from nothing.
pub fn wipe(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(path)
}

/// Removes a destroyed machine's root.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}
