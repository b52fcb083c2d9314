//! The storage backend: every byte the database reads or writes goes through [`Storage`].
//!
//! Keeping all file access behind one small trait lets tests swap the real file system for an
//! in-memory one, and (for the reliability tests) for backends that inject faults or simulate
//! power loss, without touching the engine. The production backend, [`FileStorage`], is a thin
//! wrapper over positioned reads and writes (`pread`/`pwrite`) and `fdatasync`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

/// A file opened through a [`Storage`].
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes the buffers one after the other from `offset` (one `pwritev` where the
    /// backend can).
    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut at = offset;
        for b in bufs {
            self.write_all_at(b, at)?;
            at += b.len() as u64;
        }
        Ok(())
    }
    /// Makes every write so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// The operating-system file descriptor, for batched I/O with `io_uring`; `None` (the
    /// default) makes the database use plain calls through this trait.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// A held lock on a database directory; dropping it releases the lock.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// Where the database keeps its files.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file for reading and writing, creating it if `create`. `direct` asks for
    /// direct I/O where the storage has it (every access then whole aligned pages); files of
    /// variable-length records (the rollback log) are opened without it.
    fn open(&self, path: &Path, create: bool, direct: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Whether a file exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The names of the files in a directory (not of subdirectories), in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Makes a directory's entries (created or removed files) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of a directory; `Ok(None)` if someone else holds it.
    fn try_lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>>;
}

/// The real file system.
///
/// With direct I/O (the default), the data file bypasses the operating system's page cache
/// (`O_DIRECT`): the database's own page cache is then the only memory it uses for pages,
/// and writes go from its buffers to the device without a copy. Every read and write is of
/// whole, 4 KiB-aligned pages. Where the file system refuses `O_DIRECT`, files are opened
/// without it.
#[derive(Debug, Clone, Copy)]
pub struct FileStorage {
    direct_io: bool,
}

impl Default for FileStorage {
    fn default() -> Self {
        FileStorage { direct_io: true }
    }
}

impl FileStorage {
    /// The real file system, with or without direct I/O.
    pub fn new(direct_io: bool) -> Self {
        FileStorage { direct_io }
    }
}

#[derive(Debug)]
struct OsFile(File);

impl StorageFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn write_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut slices: Vec<std::io::IoSlice<'_>> =
            bufs.iter().map(|b| std::io::IoSlice::new(b)).collect();
        let mut rest: &mut [std::io::IoSlice<'_>] = &mut slices;
        let mut at = offset;
        while !rest.is_empty() {
            let n = rustix::io::pwritev(&self.0, rest, at)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n as u64;
            std::io::IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.0.as_raw_fd())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

#[derive(Debug)]
struct OsLock(#[allow(dead_code)] File);

impl DirLock for OsLock {}

/// The name of the lock file inside a database directory.
pub const LOCK_FILE: &str = "LOCK";

impl Storage for FileStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool, direct: bool) -> io::Result<Arc<dyn StorageFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(create)
            .truncate(false);
        if self.direct_io && direct {
            let mut direct = options.clone();
            direct.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
            match direct.open(path) {
                Ok(file) => return Ok(Arc::new(OsFile(file))),
                // Not supported by this file system: fall back to buffered I/O.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Arc::new(OsFile(options.open(path)?)))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn try_lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        // `flock` locks belong to the open file description, so a second open of the same
        // directory fails even from within this process.
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(OsLock(file)))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Files held in memory: for tests, and the base of the simulated-failure backends.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    inner: Arc<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    files: Mutex<HashMap<PathBuf, Arc<MemFile>>>,
    dirs: Mutex<HashSet<PathBuf>>,
    locks: Arc<Mutex<HashSet<PathBuf>>>,
}

/// One in-memory file.
#[derive(Debug, Default)]
pub struct MemFile {
    data: RwLock<Vec<u8>>,
}

impl MemFile {
    /// A copy of the file's bytes.
    pub fn contents(&self) -> Vec<u8> {
        self.data.read().clone()
    }
}

impl StorageFile for MemFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        if end > data.len() {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.data.read().len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.data.write().resize(len, 0);
        Ok(())
    }
}

#[derive(Debug)]
struct MemLock {
    path: PathBuf,
    locks: Arc<Mutex<HashSet<PathBuf>>>,
}

impl DirLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.locks.lock().remove(&self.path);
    }
}

impl MemStorage {
    /// An empty in-memory file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file at `path`, if it exists.
    pub fn file(&self, path: &Path) -> Option<Arc<MemFile>> {
        self.inner.files.lock().get(path).cloned()
    }

    /// A copy of every file as it is now, with no locks held: what another process would
    /// find after this one died with every write reaching the disk.
    pub fn copy_after_crash(&self) -> MemStorage {
        let files = self
            .inner
            .files
            .lock()
            .iter()
            .map(|(p, f)| {
                let copy = MemFile {
                    data: RwLock::new(f.contents()),
                };
                (p.clone(), Arc::new(copy))
            })
            .collect();
        MemStorage {
            inner: Arc::new(MemInner {
                files: Mutex::new(files),
                dirs: Mutex::new(self.inner.dirs.lock().clone()),
                locks: Arc::new(Mutex::new(HashSet::new())),
            }),
        }
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.dirs.lock().insert(path.to_path_buf());
        Ok(())
    }

    fn open(&self, path: &Path, create: bool, _direct: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut files = self.inner.files.lock();
        if let Some(f) = files.get(path) {
            return Ok(f.clone());
        }
        if !create {
            return Err(io::ErrorKind::NotFound.into());
        }
        let f = Arc::new(MemFile::default());
        files.insert(path.to_path_buf(), f.clone());
        Ok(f)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.inner.files.lock().contains_key(path) || self.inner.dirs.lock().contains(path))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self.inner.files.lock().remove(path) {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .inner
            .files
            .lock()
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn try_lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        let mut locks = self.inner.locks.lock();
        if !locks.insert(dir.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemLock {
            path: dir.to_path_buf(),
            locks: self.inner.locks.clone(),
        })))
    }
}
