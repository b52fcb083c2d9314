//! Storage backends that fail on purpose, for reliability testing: [`CrashStorage`] simulates
//! power loss, [`FaultStorage`] injects I/O errors.
//!
//! Both implement [`Storage`], so a database runs on them unchanged. They hold files in memory.
//!
//! # Power loss
//!
//! A disk keeps what was made durable (`fdatasync` for a file's bytes, a directory sync for the
//! files a directory names); what was only written may be lost, kept, or torn when the power
//! goes. [`CrashStorage`] keeps, for every file, its durable bytes apart from the writes made
//! since its last sync, and for every directory the names it durably holds. At a chosen sync
//! (counting file and directory syncs from the start) it loses power: that sync and every later
//! call fail, and [`CrashStorage::recover`] then gives the files as a restart would find them:
//! each file the directories durably name, with its durable bytes and each later write kept,
//! dropped, torn (each 512-byte sector of it kept or not) or garbled (some of its sectors
//! replaced by noise), at random from a seed.
//!
//! # Injected faults
//!
//! [`FaultStorage`] wraps another storage and fails one chosen call (counting every read,
//! write, sync, open and removal) with an I/O error, no space left, a short write (part of the
//! bytes written, then an error), or a failed sync. Later calls succeed, as they may on a real
//! disk: the database must stop by itself (it poisons its handle).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::io::{DirLock, MemStorage, Storage, StorageFile};

/// The size of a disk sector: the unit a torn write keeps or loses.
pub const SECTOR: u64 = 512;

/// An operation on a file since its last sync.
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileBytes {
    /// What reads see.
    current: Vec<u8>,
    /// What survives a power loss for sure.
    durable: Vec<u8>,
    /// What was done since the last sync, in order.
    pending: Vec<Pending>,
}

/// One file of a [`CrashStorage`] (an inode: names point at it).
#[derive(Debug)]
struct CrashFile {
    bytes: Mutex<FileBytes>,
    power: Arc<Power>,
}

/// The shared power switch and sync counter.
#[derive(Debug, Default)]
struct Power {
    /// Syncs so far.
    syncs: AtomicU64,
    /// The sync at which the power goes (0: never).
    crash_at: AtomicU64,
    off: AtomicBool,
}

impl Power {
    fn check(&self) -> io::Result<()> {
        if self.off.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated power loss"));
        }
        Ok(())
    }

    /// Counts a sync; the power goes if it is the chosen one.
    fn sync(&self) -> io::Result<()> {
        self.check()?;
        let n = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at.load(Ordering::SeqCst) {
            self.off.store(true, Ordering::SeqCst);
            return Err(io::Error::other("simulated power loss"));
        }
        Ok(())
    }
}

fn apply(data: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write {
            offset,
            data: bytes,
        } => {
            let start = *offset as usize;
            let end = start + bytes.len();
            if end > data.len() {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => data.resize(*len as usize, 0),
    }
}

impl StorageFile for CrashFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.power.check()?;
        let bytes = self.bytes.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        if end > bytes.current.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&bytes.current[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.power.check()?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(buf.len()))
            .ok_or(io::ErrorKind::InvalidInput)?;
        let mut bytes = self.bytes.lock();
        let op = Pending::Write {
            offset,
            data: buf.to_vec(),
        };
        apply(&mut bytes.current, &op);
        bytes.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.power.sync()?;
        let mut bytes = self.bytes.lock();
        bytes.durable = bytes.current.clone();
        bytes.pending.clear();
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        self.power.check()?;
        Ok(self.bytes.lock().current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.power.check()?;
        usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut bytes = self.bytes.lock();
        let op = Pending::SetLen(len);
        apply(&mut bytes.current, &op);
        bytes.pending.push(op);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Names {
    /// The files each path names now.
    current: HashMap<PathBuf, Arc<CrashFile>>,
    /// The files each path names durably (as of its directory's last sync).
    durable: HashMap<PathBuf, Arc<CrashFile>>,
    dirs: std::collections::HashSet<PathBuf>,
}

/// In-memory files that lose power at a chosen sync (see the [module docs](self)).
#[derive(Clone, Default)]
pub struct CrashStorage {
    names: Arc<Mutex<Names>>,
    power: Arc<Power>,
    locks: MemStorage,
}

impl fmt::Debug for CrashStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashStorage")
            .field("syncs", &self.syncs())
            .field("powered_off", &self.is_powered_off())
            .finish()
    }
}

/// How a recovery treats each write that was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMode {
    /// Each write is kept, dropped, torn or garbled at random.
    Random,
    /// Every unsynced write is kept (a process crash, not a power loss).
    KeepAll,
    /// Every unsynced write is dropped.
    DropAll,
}

/// What a recovery did to the unsynced writes (for test reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossReport {
    /// Writes kept whole.
    pub kept: u64,
    /// Writes lost whole.
    pub dropped: u64,
    /// Writes of which some sectors were kept.
    pub torn: u64,
    /// Writes of which some sectors became noise.
    pub garbled: u64,
}

/// A small deterministic generator (SplitMix64), so that a seed replays a recovery exactly.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl CrashStorage {
    /// Empty storage with the power on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the power go at the `n`th sync from now on counting from the start (`n` ≥ 1;
    /// 0 disarms).
    pub fn crash_at_sync(&self, n: u64) {
        self.power.crash_at.store(n, Ordering::SeqCst);
    }

    /// Cuts the power now.
    pub fn power_off(&self) {
        self.power.off.store(true, Ordering::SeqCst);
    }

    /// Whether the power went.
    pub fn is_powered_off(&self) -> bool {
        self.power.off.load(Ordering::SeqCst)
    }

    /// File and directory syncs so far.
    pub fn syncs(&self) -> u64 {
        self.power.syncs.load(Ordering::SeqCst)
    }

    /// The files as a restart after a power loss now would find them, as a new storage with
    /// the power on: durable names and bytes, and each unsynced write treated as `mode` says
    /// (at random from `seed` for [`LossMode::Random`]).
    pub fn recover(&self, mode: LossMode, seed: u64) -> (CrashStorage, LossReport) {
        let mut rng = Rng(seed);
        let mut report = LossReport::default();
        let names = self.names.lock();
        let power = Arc::new(Power::default());
        let mut paths: Vec<&PathBuf> = names.durable.keys().collect();
        paths.sort();
        let mut recovered = Names {
            dirs: names.dirs.clone(),
            ..Names::default()
        };
        for path in paths {
            let file = &names.durable[path];
            let bytes = file.bytes.lock();
            let mut data = bytes.durable.clone();
            for op in &bytes.pending {
                let choice = match mode {
                    LossMode::KeepAll => 0,
                    LossMode::DropAll => 1,
                    LossMode::Random => rng.below(10),
                };
                match (op, choice) {
                    (_, 0..=3) => {
                        apply(&mut data, op);
                        report.kept += 1;
                    }
                    (_, 4..=6) => report.dropped += 1,
                    (Pending::SetLen(_), _) => {
                        apply(&mut data, op);
                        report.kept += 1;
                    }
                    (Pending::Write { offset, data: new }, c) => {
                        let garble = c == 9;
                        // Whole sectors of the write, by absolute position.
                        let end = offset + new.len() as u64;
                        let mut at = *offset;
                        while at < end {
                            let sector_end = ((at / SECTOR) + 1) * SECTOR;
                            let piece_end = sector_end.min(end);
                            let piece = &new[(at - offset) as usize..(piece_end - offset) as usize];
                            let roll = rng.below(3);
                            let bytes: Option<Vec<u8>> = match (garble, roll) {
                                (_, 0) => Some(piece.to_vec()),
                                (true, 1) => {
                                    Some((0..piece.len()).map(|_| rng.next() as u8).collect())
                                }
                                _ => None,
                            };
                            if let Some(b) = bytes {
                                apply(
                                    &mut data,
                                    &Pending::Write {
                                        offset: at,
                                        data: b,
                                    },
                                );
                            }
                            at = piece_end;
                        }
                        if garble {
                            report.garbled += 1;
                        } else {
                            report.torn += 1;
                        }
                    }
                }
            }
            let file = Arc::new(CrashFile {
                bytes: Mutex::new(FileBytes {
                    current: data.clone(),
                    durable: data,
                    pending: Vec::new(),
                }),
                power: power.clone(),
            });
            recovered.current.insert(path.clone(), file.clone());
            recovered.durable.insert(path.clone(), file);
        }
        (
            CrashStorage {
                names: Arc::new(Mutex::new(recovered)),
                power,
                locks: MemStorage::new(),
            },
            report,
        )
    }
}

impl Storage for CrashStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.power.check()?;
        // Directories are taken as durable once made: the database creates each once, before
        // it syncs anything in it.
        let mut names = self.names.lock();
        let mut p = Some(path);
        while let Some(dir) = p {
            names.dirs.insert(dir.to_path_buf());
            p = dir.parent();
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool, _direct: bool) -> io::Result<Arc<dyn StorageFile>> {
        self.power.check()?;
        let mut names = self.names.lock();
        if let Some(f) = names.current.get(path) {
            return Ok(f.clone());
        }
        if !create {
            return Err(io::ErrorKind::NotFound.into());
        }
        let f = Arc::new(CrashFile {
            bytes: Mutex::new(FileBytes::default()),
            power: self.power.clone(),
        });
        names.current.insert(path.to_path_buf(), f.clone());
        Ok(f)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.power.check()?;
        let names = self.names.lock();
        Ok(names.current.contains_key(path) || names.dirs.contains(path))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.power.check()?;
        match self.names.lock().current.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.power.check()?;
        Ok(self
            .names
            .lock()
            .current
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.power.sync()?;
        let mut names = self.names.lock();
        let Names {
            current, durable, ..
        } = &mut *names;
        durable.retain(|p, _| p.parent() != Some(path) || current.contains_key(p));
        for (p, f) in current.iter() {
            if p.parent() == Some(path) {
                durable.insert(p.clone(), f.clone());
            }
        }
        Ok(())
    }

    fn try_lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.power.check()?;
        self.locks.try_lock(dir)
    }
}

/// Which error an injected fault gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `EIO` from the call.
    Eio,
    /// `ENOSPC` (a write or sync: no space left).
    NoSpace,
    /// A write writes its first half, then fails (`EIO`); other calls fail with `EIO`.
    ShortWrite,
    /// A sync reports failure (`EIO`) without making anything durable; other calls fail
    /// with `EIO`.
    FailedSync,
}

/// The kinds of calls a [`FaultStorage`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// A read of a file.
    Read,
    /// A write (or length change) of a file.
    Write,
    /// A file or directory sync.
    Sync,
    /// Opening a file, creating a directory, listing one.
    Open,
    /// Removing a file.
    Remove,
}

#[derive(Debug, Default)]
struct FaultPlan {
    /// Calls so far.
    calls: AtomicU64,
    /// The call that fails (0: none).
    fail_at: AtomicU64,
    fault: Mutex<Option<Fault>>,
    /// The site of the failed call, once it failed.
    failed: Mutex<Option<Site>>,
    /// Where the failed call came from.
    failed_backtrace: Mutex<Option<Arc<std::backtrace::Backtrace>>>,
    /// Calls of each site (for choosing where to fail).
    by_site: Mutex<HashMap<Site, u64>>,
}

impl FaultPlan {
    /// Counts a call; returns the fault if this is the chosen one.
    fn hit(&self, site: Site) -> Option<Fault> {
        *self.by_site.lock().entry(site).or_default() += 1;
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at.load(Ordering::SeqCst) {
            *self.failed.lock() = Some(site);
            *self.failed_backtrace.lock() =
                Some(Arc::new(std::backtrace::Backtrace::force_capture()));
            return *self.fault.lock();
        }
        None
    }
}

fn fault_error(fault: Fault) -> io::Error {
    match fault {
        Fault::NoSpace => io::Error::from_raw_os_error(libc::ENOSPC),
        _ => io::Error::from_raw_os_error(libc::EIO),
    }
}

/// A storage that fails one chosen call (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct FaultStorage {
    inner: Arc<dyn Storage>,
    plan: Arc<FaultPlan>,
}

impl FaultStorage {
    /// Wraps `inner`, with no fault planned.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        FaultStorage {
            inner,
            plan: Arc::new(FaultPlan::default()),
        }
    }

    /// Makes the `n`th call from the start (`n` ≥ 1) fail with `fault`; 0 disarms.
    pub fn fail_at(&self, n: u64, fault: Fault) {
        *self.plan.fault.lock() = Some(fault);
        self.plan.fail_at.store(n, Ordering::SeqCst);
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.plan.calls.load(Ordering::SeqCst)
    }

    /// Calls so far of each site.
    pub fn calls_by_site(&self) -> HashMap<Site, u64> {
        self.plan.by_site.lock().clone()
    }

    /// The site of the call that failed, if the planned fault happened.
    pub fn failed_site(&self) -> Option<Site> {
        *self.plan.failed.lock()
    }

    /// The call stack of the call that failed (for reports of faults that were not handled).
    pub fn failed_backtrace(&self) -> Option<String> {
        self.plan
            .failed_backtrace
            .lock()
            .as_ref()
            .map(|b| b.to_string())
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn StorageFile>,
    plan: Arc<FaultPlan>,
}

impl StorageFile for FaultFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(f) = self.plan.hit(Site::Read) {
            return Err(fault_error(f));
        }
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.plan.hit(Site::Write) {
            None => self.inner.write_all_at(buf, offset),
            Some(Fault::ShortWrite) => {
                self.inner.write_all_at(&buf[..buf.len() / 2], offset)?;
                Err(fault_error(Fault::Eio))
            }
            Some(f) => Err(fault_error(f)),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        if let Some(f) = self.plan.hit(Site::Sync) {
            return Err(fault_error(f));
        }
        self.inner.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        if let Some(f) = self.plan.hit(Site::Read) {
            return Err(fault_error(f));
        }
        self.inner.size()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if let Some(f) = self.plan.hit(Site::Write) {
            return Err(fault_error(f));
        }
        self.inner.set_len(len)
    }
}

impl Storage for FaultStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if let Some(f) = self.plan.hit(Site::Open) {
            return Err(fault_error(f));
        }
        self.inner.create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool, direct: bool) -> io::Result<Arc<dyn StorageFile>> {
        if let Some(f) = self.plan.hit(Site::Open) {
            return Err(fault_error(f));
        }
        let inner = self.inner.open(path, create, direct)?;
        Ok(Arc::new(FaultFile {
            inner,
            plan: self.plan.clone(),
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        if let Some(f) = self.plan.hit(Site::Open) {
            return Err(fault_error(f));
        }
        self.inner.exists(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if let Some(f) = self.plan.hit(Site::Remove) {
            return Err(fault_error(f));
        }
        self.inner.remove_file(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        if let Some(f) = self.plan.hit(Site::Open) {
            return Err(fault_error(f));
        }
        self.inner.list_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if let Some(f) = self.plan.hit(Site::Sync) {
            return Err(fault_error(f));
        }
        self.inner.sync_dir(path)
    }

    fn try_lock(&self, dir: &Path) -> io::Result<Option<Box<dyn DirLock>>> {
        self.inner.try_lock(dir)
    }
}
