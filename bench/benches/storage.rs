//! The cost of the storage abstraction: reading and writing a 4 KiB page through
//! `Arc<dyn StorageFile>` (what the engine does with `FileStorage`, the production backend)
//! against `pread`/`pwrite` on a plain `std::fs::File`, on the same file. Buffered I/O (page
//! cache hits) so that the calls themselves, not the device, dominate: any cost of the
//! abstraction shows here if anywhere.
//!
//! `cargo bench -p bmt-bench --bench storage`

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bmt::io::{FileStorage, Storage};
use criterion::{Criterion, criterion_group, criterion_main};

const PAGE: usize = 4096;
const PAGES: u64 = 16384;

/// Page numbers in a fixed scattered order (the same for both paths).
fn order() -> Vec<u64> {
    (0..4096u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % PAGES)
        .collect()
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("pages");
    std::fs::write(&path, vec![0xA5u8; PAGE * PAGES as usize]).expect("write the file");
    let storage = FileStorage::new(false);
    let through_trait = storage
        .open(Path::new(&path), false, false)
        .expect("open through the trait");
    let plain = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open plain");
    let order = order();
    let mut buf = vec![0u8; PAGE];

    let mut g = c.benchmark_group("storage/read_page");
    g.bench_function("plain_pread", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % order.len();
            plain
                .read_exact_at(&mut buf, order[i] * PAGE as u64)
                .expect("read");
            black_box(&buf);
        })
    });
    g.bench_function("dyn_storage_file", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % order.len();
            through_trait
                .read_exact_at(&mut buf, order[i] * PAGE as u64)
                .expect("read");
            black_box(&buf);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("storage/write_page");
    let page = vec![0x5Au8; PAGE];
    g.bench_function("plain_pwrite", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % order.len();
            plain
                .write_all_at(&page, order[i] * PAGE as u64)
                .expect("write");
        })
    });
    g.bench_function("dyn_storage_file", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % order.len();
            through_trait
                .write_all_at(&page, order[i] * PAGE as u64)
                .expect("write");
        })
    });
    g.finish();
}

criterion_group!(storage, benches);
criterion_main!(storage);
