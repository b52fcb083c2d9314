//! Batched file I/O with `io_uring`: many reads and writes in flight from one thread.
//!
//! A commit writes thousands of scattered pages and, on a large state, reads thousands. One
//! blocking system call per page from a pool of threads costs a thread switch per page, which
//! on a 2-core machine takes CPU from hashing; `io_uring` hands the kernel a batch at a time
//! and keeps up to [`QUEUE_DEPTH`] operations in flight.
//!
//! The executor owns every buffer of an operation until the kernel has answered for it: the
//! buffers are heap allocations held in the in-flight table, so the addresses given to the
//! kernel stay valid however the table moves. If the ring itself fails (which should not
//! happen once it is set up), buffers of operations still in flight are leaked, never freed
//! while the kernel might write to them, and every later job runs with plain blocking calls.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc;

use io_uring::{IoUring, opcode, types};

use crate::io::StorageFile;
use crate::page::{Extent, PAGE_SIZE, PageBuf, SharedPage, extent_bytes};

/// Operations in flight at most.
pub const QUEUE_DEPTH: u32 = 256;

/// Largest single write of an extent (longer extents are split).
const MAX_WRITE: usize = 1 << 20;

/// One operation and the buffer it works on.
#[derive(Debug)]
pub enum Op {
    /// Read a page at a byte offset.
    Read {
        /// Byte offset in the file.
        offset: u64,
        /// Where the page goes.
        buf: Box<PageBuf>,
    },
    /// Write consecutive pages from a byte offset.
    WritePages {
        /// Byte offset in the file.
        offset: u64,
        /// The pages, in file order.
        pages: Vec<SharedPage>,
    },
    /// Write part of an extent: bytes `range` of `extent`, at `offset + range.start`.
    WriteExtent {
        /// Byte offset of the extent's start in the file.
        offset: u64,
        /// The extent.
        extent: Arc<Extent>,
        /// The part written by this operation.
        range: std::ops::Range<usize>,
    },
}

/// What to do when every operation of a job is done: it gets each one back with its result.
pub type OnDone = Box<dyn FnOnce(Vec<(Op, io::Result<()>)>) + Send>;

/// A set of operations and what to do when all of them are done.
pub struct Job {
    /// The operations.
    pub ops: Vec<Op>,
    /// Called with every operation back and its result.
    pub done: OnDone,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} ops)", self.ops.len())
    }
}

/// Splits an extent write into operations of at most [`MAX_WRITE`] bytes.
pub fn extent_ops(offset: u64, extent: Arc<Extent>) -> Vec<Op> {
    let len = extent.len() * PAGE_SIZE;
    (0..len)
        .step_by(MAX_WRITE)
        .map(|start| Op::WriteExtent {
            offset,
            extent: extent.clone(),
            range: start..(start + MAX_WRITE).min(len),
        })
        .collect()
}

/// Starts the executor thread for `file` (whose descriptor is `fd`); `None` if `io_uring` is
/// not available. The thread holds `file` open until the last sender is dropped.
pub fn start(fd: RawFd, file: Arc<dyn StorageFile>) -> Option<mpsc::Sender<Job>> {
    let ring = IoUring::new(QUEUE_DEPTH).ok()?;
    let (sender, receiver) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("bmt-uring".into())
        .spawn(move || {
            Executor::new(fd, ring).run(receiver);
            drop(file);
        })
        .ok()?;
    Some(sender)
}

/// An operation in flight and the job it belongs to.
struct InFlight {
    job: usize,
    index: usize,
    op: Op,
    /// The `iovec`s of a vectored write (pointing into `op`'s pages).
    _iovecs: Vec<libc::iovec>,
}

// SAFETY: the raw pointers in `_iovecs` point into buffers owned by `op`, which are `Send`
// (boxed pages, `Arc`s of pages); the executor moves an `InFlight` only within its thread.
unsafe impl Send for InFlight {}

/// A job being executed.
struct Running {
    results: Vec<Option<(Op, io::Result<()>)>>,
    remaining: usize,
    done: Option<OnDone>,
}

struct Executor {
    fd: RawFd,
    ring: Option<IoUring>,
    jobs: Vec<Option<Running>>,
    free_jobs: Vec<usize>,
    slots: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    /// Operations waiting for a place in the ring.
    queue: std::collections::VecDeque<(usize, usize, Op)>,
}

impl Executor {
    fn new(fd: RawFd, ring: IoUring) -> Self {
        Executor {
            fd,
            ring: Some(ring),
            jobs: Vec::new(),
            free_jobs: Vec::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            queue: std::collections::VecDeque::new(),
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    fn run(mut self, receiver: mpsc::Receiver<Job>) {
        loop {
            // Take new work: wait for it when idle, else take what is there.
            if self.in_flight() == 0 && self.queue.is_empty() {
                match receiver.recv() {
                    Ok(job) => self.accept(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = receiver.try_recv() {
                self.accept(job);
            }
            if self.ring.is_none() {
                self.run_blocking();
                continue;
            }
            self.fill();
            self.submit_and_reap();
        }
    }

    fn accept(&mut self, job: Job) {
        let n = job.ops.len();
        let running = Running {
            results: (0..n).map(|_| None).collect(),
            remaining: n,
            done: Some(job.done),
        };
        let id = match self.free_jobs.pop() {
            Some(id) => {
                self.jobs[id] = Some(running);
                id
            }
            None => {
                self.jobs.push(Some(running));
                self.jobs.len() - 1
            }
        };
        if n == 0 {
            self.finish_job(id);
            return;
        }
        for (index, op) in job.ops.into_iter().enumerate() {
            self.queue.push_back((id, index, op));
        }
    }

    /// Moves queued operations into the ring while it has room.
    fn fill(&mut self) {
        while self.in_flight() < QUEUE_DEPTH as usize {
            let Some((job, index, op)) = self.queue.pop_front() else {
                break;
            };
            let slot = match self.free_slots.pop() {
                Some(s) => s,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            let mut flight = InFlight {
                job,
                index,
                op,
                _iovecs: Vec::new(),
            };
            let fd = types::Fd(self.fd);
            let entry = match &mut flight.op {
                Op::Read { offset, buf } => {
                    opcode::Read::new(fd, buf.bytes_mut().as_mut_ptr(), PAGE_SIZE as u32)
                        .offset(*offset)
                        .build()
                }
                Op::WritePages { offset, pages } => {
                    flight._iovecs = pages
                        .iter()
                        .map(|p| libc::iovec {
                            iov_base: p.bytes().as_ptr() as *mut libc::c_void,
                            iov_len: PAGE_SIZE,
                        })
                        .collect();
                    opcode::Writev::new(fd, flight._iovecs.as_ptr(), flight._iovecs.len() as u32)
                        .offset(*offset)
                        .build()
                }
                Op::WriteExtent {
                    offset,
                    extent,
                    range,
                } => {
                    let bytes = &extent_bytes(extent)[range.clone()];
                    opcode::Write::new(fd, bytes.as_ptr(), bytes.len() as u32)
                        .offset(*offset + range.start as u64)
                        .build()
                }
            }
            .user_data(slot as u64);
            self.slots[slot] = Some(flight);
            let ring = self.ring.as_mut().expect("checked by the caller");
            // SAFETY: the entry points at buffers owned by `self.slots[slot]` (a boxed page,
            // pages and their `iovec` array, or an extent held by an `Arc`); they are not
            // dropped or moved before the completion for `slot` is reaped (or, if the ring
            // fails, ever: see `abandon`).
            let pushed = unsafe { ring.submission().push(&entry) };
            if pushed.is_err() {
                // The submission queue is full: submit what is there first.
                let flight = self.slots[slot].take().expect("just stored");
                self.free_slots.push(slot);
                self.queue.push_front((flight.job, flight.index, flight.op));
                break;
            }
        }
    }

    fn submit_and_reap(&mut self) {
        if self.in_flight() == 0 {
            return;
        }
        let ring = self.ring.as_mut().expect("checked by the caller");
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                ) => {}
            Err(e) => {
                self.abandon(e);
                return;
            }
        }
        let completions: Vec<(u64, i32)> = ring
            .completion()
            .map(|cqe| (cqe.user_data(), cqe.result()))
            .collect();
        for (slot, result) in completions {
            let Some(flight) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            self.free_slots.push(slot as usize);
            let expected = match &flight.op {
                Op::Read { .. } => PAGE_SIZE,
                Op::WritePages { pages, .. } => pages.len() * PAGE_SIZE,
                Op::WriteExtent { range, .. } => range.len(),
            };
            let outcome = if result < 0 {
                Err(io::Error::from_raw_os_error(-result))
            } else if (result as usize) < expected {
                // A short transfer: finish it with blocking calls.
                self.finish_short(&flight.op, result as usize)
            } else {
                Ok(())
            };
            self.record(flight.job, flight.index, flight.op, outcome);
        }
    }

    /// Completes the rest of an operation the kernel did only in part.
    fn finish_short(&self, op: &Op, done: usize) -> io::Result<()> {
        // SAFETY: `self.fd` is the data file's descriptor, which stays open while the
        // executor runs: its thread holds the file (see `start`).
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let (offset, bytes): (u64, Vec<u8>) = match op {
            Op::Read { .. } => return Err(io::ErrorKind::UnexpectedEof.into()),
            Op::WritePages { offset, pages } => (
                *offset,
                pages
                    .iter()
                    .flat_map(|p| p.bytes().iter().copied())
                    .collect(),
            ),
            Op::WriteExtent {
                offset,
                extent,
                range,
            } => (
                *offset + range.start as u64,
                extent_bytes(extent)[range.clone()].to_vec(),
            ),
        };
        let mut at = done;
        while at < bytes.len() {
            let n = rustix::io::pwrite(fd, &bytes[at..], offset + at as u64)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n;
        }
        Ok(())
    }

    fn record(&mut self, job: usize, index: usize, op: Op, outcome: io::Result<()>) {
        let Some(running) = self.jobs.get_mut(job).and_then(Option::as_mut) else {
            return;
        };
        running.results[index] = Some((op, outcome));
        running.remaining -= 1;
        if running.remaining == 0 {
            self.finish_job(job);
        }
    }

    fn finish_job(&mut self, job: usize) {
        if let Some(mut running) = self.jobs[job].take() {
            let results = running.results.drain(..).flatten().collect();
            if let Some(done) = running.done.take() {
                done(results);
            }
        }
        self.free_jobs.push(job);
    }

    /// The ring failed: operations in flight may still be running in the kernel, so their
    /// buffers are leaked rather than freed, and they are reported as failed.
    fn abandon(&mut self, error: io::Error) {
        self.ring = None;
        for slot in 0..self.slots.len() {
            if let Some(flight) = self.slots[slot].take() {
                let (job, index) = (flight.job, flight.index);
                let copy = match &flight.op {
                    Op::Read { offset, .. } => Op::Read {
                        offset: *offset,
                        buf: PageBuf::zeroed(),
                    },
                    Op::WritePages { offset, .. } => Op::WritePages {
                        offset: *offset,
                        pages: Vec::new(),
                    },
                    Op::WriteExtent { offset, range, .. } => Op::WriteExtent {
                        offset: *offset,
                        extent: Arc::new(Vec::new()),
                        range: range.clone(),
                    },
                };
                std::mem::forget(flight);
                self.record(
                    job,
                    index,
                    copy,
                    Err(io::Error::new(error.kind(), error.to_string())),
                );
            }
        }
        self.free_slots = (0..self.slots.len()).collect();
    }

    /// Runs queued operations with blocking calls (after the ring failed).
    fn run_blocking(&mut self) {
        // SAFETY: as in `finish_short`.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        while let Some((job, index, mut op)) = self.queue.pop_front() {
            let outcome = match &mut op {
                Op::Read { offset, buf } => rustix::io::pread(fd, buf.bytes_mut(), *offset)
                    .map_err(io::Error::from)
                    .and_then(|n| {
                        if n == PAGE_SIZE {
                            Ok(())
                        } else {
                            Err(io::ErrorKind::UnexpectedEof.into())
                        }
                    }),
                _ => self.finish_short(&op, 0),
            };
            self.record(job, index, op, outcome);
        }
    }
}
