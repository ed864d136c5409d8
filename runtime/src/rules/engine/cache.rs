//! On-disk cache of compiled rules, so a restart or an identical file dropped in again
//! does not compile again (a Python component takes seconds).
//!
//! An entry is keyed by SHA-256 of the engine's compatibility hash (wasmtime version and
//! every setting that affects code), the artifact kind and the file's bytes. Loading
//! compiled code runs it without validation, so the cache only ever loads entries it
//! wrote itself: every entry carries an HMAC-SHA-256 made with a key that only this
//! cache directory holds (created on first use, readable by its owner alone), and the
//! directory and the key must belong to the current user and not be writable by others.
//! Anything that does not check out is ignored (and compiled afresh).

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"WRCACHE1";
const KEY_FILE: &str = "key";

/// A verified cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    key: [u8; 32],
}

/// The cache key of one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Cache {
    /// Opens (creating if needed) the cache in `dir`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created, or it or its key belongs to another user or
    /// is writable by others.
    pub fn open(dir: &Path) -> anyhow::Result<Cache> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
        restrict(dir, 0o700)?;
        check_private(dir)?;
        let key_path = dir.join(KEY_FILE);
        let key = match fs::read(&key_path) {
            Ok(k) => {
                check_private(&key_path)?;
                k.try_into()
                    .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", key_path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = [0u8; 32];
                fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut k))
                    .context("cannot read /dev/urandom for the cache key")?;
                write_private(&key_path, &k)?;
                k
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_path.display())),
        };
        Ok(Cache {
            dir: dir.to_owned(),
            key,
        })
    }

    /// The key for `bytes` compiled as `kind` by `engine`.
    pub fn key(&self, engine: &wasmtime::Engine, kind: &str, bytes: &[u8]) -> Key {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let mut d = Sha256::new();
        d.update(h.finish().to_le_bytes());
        d.update(kind.as_bytes());
        d.update([0]);
        d.update(bytes);
        Key(hex(&d.finalize()))
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.bin", key.0))
    }

    /// The serialized artifact for `key`, if present and written by this cache.
    pub fn get(&self, key: &Key) -> Option<Vec<u8>> {
        let path = self.path(key);
        let data = fs::read(&path).ok()?;
        if check_private(&path).is_err() {
            tracing::warn!(file = %path.display(), "ignoring a cache entry others could have written");
            return None;
        }
        let body = data.strip_prefix(MAGIC)?;
        let (mac, artifact) = body.split_first_chunk::<32>()?;
        if hmac(&self.key, artifact) != *mac {
            tracing::warn!(file = %path.display(), "ignoring a cache entry that fails its check");
            return None;
        }
        Some(artifact.to_vec())
    }

    /// Stores `artifact` under `key`; failures are logged, not fatal.
    pub fn put(&self, key: &Key, artifact: &[u8]) {
        let path = self.path(key);
        let tmp = self.dir.join(format!(".{}.tmp", key.0));
        let write = || -> std::io::Result<()> {
            let mut f = open_private(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&hmac(&self.key, artifact))?;
            f.write_all(artifact)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            tracing::warn!(file = %path.display(), "cannot write cache entry: {e}");
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key);
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions of {}", path.display()))
}

#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        bail!(
            "{} belongs to user {}, not to this process ({me})",
            path.display(),
            m.uid()
        );
    }
    if m.mode() & 0o022 != 0 {
        bail!("{} is writable by group or others", path.display());
    }
    Ok(())
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut f = open_private(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    fs::write(path, data).with_context(|| format!("cannot create {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2_shape() {
        // RFC 4231 test case 2 uses a 4-byte key ("Jefe"); zero-padded to 32 it is the
        // same HMAC, since keys shorter than the block are zero-padded anyway.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn entries_round_trip_and_tampering_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let engine = wasmtime::Engine::default();
        let k = cache.key(&engine, "module", b"wasm bytes");
        assert_eq!(cache.get(&k), None);
        cache.put(&k, b"compiled");
        assert_eq!(cache.get(&k).as_deref(), Some(&b"compiled"[..]));
        // Another key, the same contents: not the same entry.
        assert_ne!(k, cache.key(&engine, "component", b"wasm bytes"));
        // Flip a byte: refused.
        let p = cache.path(&k);
        let mut data = fs::read(&p).unwrap();
        *data.last_mut().unwrap() ^= 1;
        fs::write(&p, &data).unwrap();
        assert_eq!(cache.get(&k), None);
        // A second open reuses the key: entries written before stay valid.
        cache.put(&cache.key(&engine, "module", b"x"), b"y");
        let again = Cache::open(&dir.path().join("c")).unwrap();
        assert_eq!(
            again.get(&again.key(&engine, "module", b"x")).as_deref(),
            Some(&b"y"[..])
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_cache_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c");
        Cache::open(&c).unwrap();
        fs::set_permissions(c.join(KEY_FILE), fs::Permissions::from_mode(0o666)).unwrap();
        let err = Cache::open(&c).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
    }
}
