//! A storage of in-memory files that hands each file, as it is opened, to a test's own wrapper:
//! how tests inject failures or count reads while every other call goes straight through.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bmt::io::{DirLock, MemStorage, Storage, StorageFile};

/// Wraps a file opened at a path.
type Wrap = dyn Fn(&Path, Arc<dyn StorageFile>) -> Arc<dyn StorageFile> + Send + Sync;

/// In-memory files (shared with the `MemStorage` it was made from), each wrapped on open.
#[derive(Clone)]
pub struct WrappedStorage {
    inner: MemStorage,
    wrap: Arc<Wrap>,
}

impl WrappedStorage {
    pub fn new(
        inner: MemStorage,
        wrap: impl Fn(&Path, Arc<dyn StorageFile>) -> Arc<dyn StorageFile> + Send + Sync + 'static,
    ) -> Self {
        WrappedStorage {
            inner,
            wrap: Arc::new(wrap),
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

impl Storage for WrappedStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool, direct: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok((self.wrap)(path, self.inner.open(path, create, direct)?))
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
