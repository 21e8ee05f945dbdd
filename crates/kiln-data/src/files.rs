//! Files written whole or not at all: temporary files beside their destination, renamed into
//! place when complete. Used for downloads and unpacked archives here and for run folders by
//! kiln-experiments.

use std::fs::{self, File};
use std::path::Path;

/// A temporary file or folder beside its destination, deleted unless persisted, created with
/// the permissions `File::create` and `create_dir` give (`mode` less the umask) rather than
/// tempfile's owner-only default: data folders and run folders are often shared between users.
/// `mode` is ignored where there are no Unix permissions.
pub fn temp_builder<'a>(prefix: &'a str, suffix: &'a str, mode: u32) -> tempfile::Builder<'a, 'a> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder
}

/// Makes a rename into `dir` durable; best effort (not possible on every platform).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
