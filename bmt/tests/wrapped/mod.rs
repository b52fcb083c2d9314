//! A storage of in-memory files whose calls a test can intercept: how tests inject failures
//! or count reads while every call they do not intercept goes straight through.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bmt::io::{DirLock, MemStorage, Storage, StorageFile};

/// What a test does before a call on a file goes through: an error fails the call. Every
/// hook lets the call through unless the test overrides it.
pub trait Hooks: Send + Sync + fmt::Debug {
    /// Before a read of `len` bytes.
    fn before_read(&self, _len: usize) -> io::Result<()> {
        Ok(())
    }
    /// Before a write.
    fn before_write(&self) -> io::Result<()> {
        Ok(())
    }
    /// Before a sync.
    fn before_sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Chooses the hooks of the file opened at a path (`None`: the file is not intercepted).
type HooksFor = dyn Fn(&Path) -> Option<Arc<dyn Hooks>> + Send + Sync;

/// In-memory files (shared with the `MemStorage` it was made from), intercepted on open.
#[derive(Clone)]
pub struct WrappedStorage {
    inner: MemStorage,
    hooks_for: Arc<HooksFor>,
}

impl WrappedStorage {
    pub fn new(
        inner: MemStorage,
        hooks_for: impl Fn(&Path) -> Option<Arc<dyn Hooks>> + Send + Sync + 'static,
    ) -> Self {
        WrappedStorage {
            inner,
            hooks_for: Arc::new(hooks_for),
        }
    }
}

impl fmt::Debug for WrappedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedStorage")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct HookedFile {
    inner: Arc<dyn StorageFile>,
    hooks: Arc<dyn Hooks>,
}

impl StorageFile for HookedFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.hooks.before_read(buf.len())?;
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.hooks.before_write()?;
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.hooks.before_sync()?;
        self.inner.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Storage for WrappedStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool, direct: bool) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.open(path, create, direct)?;
        Ok(match (self.hooks_for)(path) {
            Some(hooks) => Arc::new(HookedFile { inner, hooks }),
            None => inner,
        })
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn try_lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.inner.try_lock(dir)
    }
}
