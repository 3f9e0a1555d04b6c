//! The compiled-plugin cache: `state_dir/plugin-cache/<wasm sha256>-<engine>.cwasm`.
//!
//! `Component::deserialize` trusts its input: a few flipped bytes in a
//! `.cwasm` make wasmtime segfault, abort on a huge allocation or panic. So an
//! entry carries its own digest, and nothing reaches the deserializer unless
//! the digest matches. An entry is
//!
//! ```text
//! MAGIC (16 bytes) | sha256(wasm sha256 | engine hash | payload) (32 bytes) | payload
//! ```
//!
//! The wasm's sha256 and the engine's compatibility hash are inside the
//! digest, so an entry copied under another plugin's name, or left by another
//! wasmtime, fails the check like a damaged one. A bad entry is removed and
//! recompiled with a warning; the cache can make a start slower, never fail it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Marks the entry format; a file without it (e.g. a bare `.cwasm` from an
/// older offsite) is recompiled.
const MAGIC: &[u8; 16] = b"offsite-cwasm-1\n";
const HEADER: usize = MAGIC.len() + 32;

/// One cache entry: where it lives and what it must match.
pub struct Entry {
    pub path: PathBuf,
    wasm_sha256: String,
    engine: u64,
}

/// Why an entry was not used.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// No entry yet.
    Absent,
    /// An entry exists but fails its check; the reason, for the warning.
    Damaged(String),
}

impl Entry {
    pub fn new(dir: &Path, wasm_sha256: &str, engine: u64) -> Entry {
        Entry {
            path: dir.join(format!("{wasm_sha256}-{engine:016x}.cwasm")),
            wasm_sha256: wasm_sha256.to_string(),
            engine,
        }
    }

    fn digest(&self, payload: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.wasm_sha256.as_bytes());
        h.update(self.engine.to_le_bytes());
        h.update(payload);
        h.finalize().into()
    }

    /// The checked payload, read into memory (not mmapped: a file truncated
    /// under a mapping would kill the runner with SIGBUS).
    pub fn read(&self) -> Result<Vec<u8>, Miss> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(Miss::Damaged(format!("unreadable: {e}"))),
        };
        self.check(bytes).map_err(Miss::Damaged)
    }

    fn check(&self, mut bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(format!(
                "not an offsite cache entry ({} bytes, no header)",
                bytes.len()
            ));
        }
        let payload = &bytes[HEADER..];
        if bytes[MAGIC.len()..HEADER] != self.digest(payload) {
            return Err("its digest does not match its content".into());
        }
        bytes.drain(..HEADER);
        Ok(bytes)
    }

    /// Write an entry atomically (temporary file, fsync, rename). A failure
    /// only costs a compile next time, so it is logged, not returned.
    pub fn write(&self, payload: &[u8]) {
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.digest(payload));
        bytes.extend_from_slice(payload);
        if let Err(e) = crate::store::write_atomic(&self.path, &bytes) {
            tracing::warn!("plugin cache: cannot keep the compiled plugin: {e:#}");
        }
    }

    /// Drop a damaged entry, saying so.
    pub fn discard(&self, why: &str) {
        tracing::warn!(
            "plugin cache: {} is damaged ({why}); removed, the plugin is compiled again",
            self.path.display()
        );
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("plugin cache: cannot remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_and_any_change_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let e = Entry::new(dir.path(), "ab", 7);
        assert_eq!(e.read(), Err(Miss::Absent));
        e.write(b"compiled code");
        assert_eq!(e.read().unwrap(), b"compiled code");
        let good = std::fs::read(&e.path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&e.path, &bad).unwrap();
            assert!(matches!(e.read(), Err(Miss::Damaged(_))), "flip at {i}");
        }
        for len in [0, 5, HEADER, good.len() - 1] {
            std::fs::write(&e.path, &good[..len]).unwrap();
            assert!(matches!(e.read(), Err(Miss::Damaged(_))), "cut at {len}");
        }
        // The same bytes under another plugin's or engine's name do not pass.
        std::fs::write(&e.path, &good).unwrap();
        assert!(Entry::new(dir.path(), "cd", 7).check(good.clone()).is_err());
        assert!(Entry::new(dir.path(), "ab", 8).check(good).is_err());
    }
}
