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
//!
//! An entry is the artifact as wasmtime serialized it, then the HMAC, then [`MAGIC`]:
//! the artifact starts at offset 0 so that wasmtime can map the file itself
//! ([`Entry`]) instead of copying it into anonymous memory. Mapped, a rule's compiled
//! code and its memory image are file pages: only the pages that run or are read
//! count towards the process's RSS, and the kernel can drop them under memory
//! pressure and read them again. Each mapping is of the inode that was verified
//! (the same open file); entries are only ever replaced by a rename, never written in
//! place, so the runtime never changes a file it has mapped.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// The last bytes of an entry (the layout changed from `WRCACHE1`, whose header made
/// the file unmappable; such entries fail the check and are compiled again).
const MAGIC: &[u8; 8] = b"WRCACHE2";
const MAC_LEN: usize = 32;
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

    /// The entry for `key`, if present and written by this cache (its HMAC checks).
    pub fn get(&self, key: &Key) -> Option<Entry> {
        let path = self.path(key);
        let file = fs::File::open(&path).ok()?;
        if check_private(&path).is_err() {
            tracing::warn!(file = %path.display(), "ignoring a cache entry others could have written");
            return None;
        }
        match self.verify(file) {
            Ok(Some(entry)) => Some(entry),
            Ok(None) => {
                tracing::warn!(file = %path.display(), "ignoring a cache entry that fails its check");
                None
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), "cannot read cache entry: {e}");
                None
            }
        }
    }

    /// Reads `file` through once, checking its trailer and HMAC; `None` if they do not
    /// check out. Streams the file: a large component's artifact is not copied.
    fn verify(&self, mut file: fs::File) -> std::io::Result<Option<Entry>> {
        let len = file.metadata()?.len();
        let trailer = (MAC_LEN + MAGIC.len()) as u64;
        if len < trailer {
            return Ok(None);
        }
        let artifact_len = len - trailer;
        let mut mac = Hmac::new(&self.key);
        let mut left = artifact_len;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = buf.len().min(left as usize);
            file.read_exact(&mut buf[..n])?;
            mac.update(&buf[..n]);
            left -= n as u64;
        }
        let mut tail = [0u8; MAC_LEN + 8];
        file.read_exact(&mut tail)?;
        let (stored, magic) = tail.split_at(MAC_LEN);
        if magic != MAGIC || !mac.matches(stored) {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(0))?;
        Ok(Some(Entry { file, artifact_len }))
    }

    /// Stores `artifact` under `key` and returns the stored entry; failures are logged,
    /// not fatal (`None`).
    pub fn put(&self, key: &Key, artifact: &[u8]) -> Option<Entry> {
        let path = self.path(key);
        let tmp = self.dir.join(format!(".{}.tmp", key.0));
        let write = || -> std::io::Result<fs::File> {
            let mut f = open_private(&tmp)?;
            f.write_all(artifact)?;
            f.write_all(&hmac(&self.key, artifact))?;
            f.write_all(MAGIC)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            Ok(f)
        };
        match write() {
            Ok(file) => Some(Entry {
                file,
                artifact_len: artifact.len() as u64,
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                tracing::warn!(file = %path.display(), "cannot write cache entry: {e}");
                None
            }
        }
    }
}

/// A verified cache entry, open: the file wasmtime maps (its trailer after the
/// artifact is not part of any section, so the loader ignores it).
#[derive(Debug)]
pub struct Entry {
    file: fs::File,
    artifact_len: u64,
}

impl Entry {
    /// The open file (another descriptor of it), for `Module::deserialize_open_file`.
    pub fn try_clone_file(&self) -> std::io::Result<fs::File> {
        self.file.try_clone()
    }

    /// A path that opens this same file (not whatever is at the entry's name now),
    /// for loaders that take a path (`Component::deserialize_file`); valid while this
    /// entry lives. Linux: `/proc/self/fd/N`; `None` where that does not exist.
    pub fn reopenable_path(&self) -> Option<PathBuf> {
        use std::os::fd::AsRawFd as _;
        let p = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        p.exists().then_some(p)
    }

    /// The artifact's bytes (copied; tests and tools).
    pub fn read_artifact(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = vec![0u8; self.artifact_len as usize];
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_exact(&mut out)?;
        Ok(out)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

type HmacSha256 = hmac::Hmac<Sha256>;

/// HMAC-SHA-256 of `msg` under `key`.
fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::new(key);
    mac.update(msg);
    mac.finish()
}

/// HMAC-SHA-256 over data given in pieces.
struct Hmac(HmacSha256);

impl Hmac {
    fn new(key: &[u8; 32]) -> Hmac {
        use hmac::Mac as _;
        Hmac(HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"))
    }

    fn update(&mut self, data: &[u8]) {
        use hmac::Mac as _;
        self.0.update(data);
    }

    fn finish(self) -> [u8; 32] {
        use hmac::Mac as _;
        self.0.finalize().into_bytes().into()
    }

    /// Whether `tag` is this HMAC (compared in constant time).
    fn matches(self, tag: &[u8]) -> bool {
        use hmac::Mac as _;
        self.0.verify_slice(tag).is_ok()
    }
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
    // Readable too: an entry's file is handed on to be mapped.
    fs::OpenOptions::new()
        .read(true)
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
        .read(true)
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

    fn artifact(entry: Option<Entry>) -> Option<Vec<u8>> {
        entry.map(|mut e| e.read_artifact().unwrap())
    }

    #[test]
    fn entries_round_trip_and_tampering_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let engine = wasmtime::Engine::default();
        let k = cache.key(&engine, "module", b"wasm bytes");
        assert!(cache.get(&k).is_none());
        let mut put = cache.put(&k, b"compiled").unwrap();
        assert_eq!(put.read_artifact().unwrap(), b"compiled");
        assert_eq!(artifact(cache.get(&k)).as_deref(), Some(&b"compiled"[..]));
        // The artifact comes first in the file: a loader can map the file as it is.
        let p = cache.path(&k);
        assert!(fs::read(&p).unwrap().starts_with(b"compiled"));
        // Another key, the same contents: not the same entry.
        assert_ne!(k, cache.key(&engine, "component", b"wasm bytes"));
        // Flip a byte of the artifact, of the HMAC, of the magic; cut the file short:
        // each refused.
        let good = fs::read(&p).unwrap();
        for at in [0, good.len() - 9, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            fs::write(&p, &bad).unwrap();
            assert!(cache.get(&k).is_none(), "byte {at} flipped");
        }
        fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(cache.get(&k).is_none(), "cut short");
        fs::write(&p, &good[..3]).unwrap();
        assert!(cache.get(&k).is_none(), "shorter than the trailer");
        // An entry in the old layout (magic and HMAC first) is refused, not misread.
        let mut old = b"WRCACHE1".to_vec();
        old.extend_from_slice(&hmac(&cache.key, b"compiled"));
        old.extend_from_slice(b"compiled");
        fs::write(&p, &old).unwrap();
        assert!(cache.get(&k).is_none(), "old layout");
        // A second open reuses the key: entries written before stay valid.
        cache.put(&cache.key(&engine, "module", b"x"), b"y");
        let again = Cache::open(&dir.path().join("c")).unwrap();
        assert_eq!(
            artifact(again.get(&again.key(&engine, "module", b"x"))).as_deref(),
            Some(&b"y"[..])
        );
    }

    #[test]
    fn an_entry_opens_the_file_it_verified_even_after_a_replace() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let engine = wasmtime::Engine::default();
        let k = cache.key(&engine, "module", b"m");
        cache.put(&k, b"first");
        let entry = cache.get(&k).unwrap();
        cache.put(&k, b"second");
        let path = entry.reopenable_path().expect("/proc/self/fd");
        let bytes = fs::read(path).unwrap();
        assert!(bytes.starts_with(b"first"), "{bytes:?}");
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
