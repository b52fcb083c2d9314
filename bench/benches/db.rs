//! Micro-benchmarks of the database: reads, staging writes, commits of 1 / 100 / 10,000
//! updates, read-session creation, rolling back and proving (witness) a commit of 10,000
//! updates, and proofs from disk.
//!
//! `cargo bench -p bmt-bench --bench db`. The database holds 2^20 keys with 32-byte values,
//! on disk in a temporary directory, with the default 256 MiB page cache (warm: every page
//! was written through it).

use std::hint::black_box;
use std::time::Duration;

use bmt::{Key, Nomt, Options};
use bmt_bench::DetRng;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const KEYS: usize = 1 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    db: Nomt,
    keys: Vec<Key>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Nomt::open(Options::new(dir.path())).unwrap();
    let mut rng = DetRng::new(7);
    let mut keys: Vec<Key> = (0..KEYS).map(|_| rng.key()).collect();
    keys.sort();
    for chunk in keys.chunks(1 << 18) {
        for k in chunk {
            db.insert(k, rng.value32()).unwrap();
        }
        db.commit().unwrap();
    }
    Fixture {
        _dir: dir,
        db,
        keys,
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let mut rng = DetRng::new(11);

    let mut g = c.benchmark_group("get");
    g.bench_function("committed_warm", |b| {
        b.iter_batched(
            || f.keys[rng.below(KEYS)],
            |k| black_box(f.db.get(k).unwrap()),
            BatchSize::SmallInput,
        )
    });
    f.db.insert(f.keys[0], [1u8; 32]).unwrap();
    g.bench_function("overlay_hit", |b| {
        b.iter(|| black_box(f.db.get(f.keys[0]).unwrap()))
    });
    g.bench_function("absent", |b| {
        b.iter_batched(
            || rng.key(),
            |k| black_box(f.db.get(k).unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    f.db.commit().unwrap();

    let mut g = c.benchmark_group("insert");
    g.bench_function("overlay", |b| {
        b.iter_batched(
            || (f.keys[rng.below(KEYS)], rng.value32()),
            |(k, v)| f.db.insert(k, v).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    f.db.commit().unwrap();

    let mut g = c.benchmark_group("commit");
    for n in [1usize, 100, 10_000] {
        if n == 10_000 {
            g.sample_size(10).measurement_time(Duration::from_secs(10));
        }
        g.bench_function(format!("updates_{n}"), |b| {
            b.iter_batched(
                || {
                    for _ in 0..n {
                        f.db.insert(f.keys[rng.below(KEYS)], rng.value32()).unwrap();
                    }
                },
                |()| f.db.commit().unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("session");
    g.bench_function("begin_read", |b| {
        b.iter(|| black_box(f.db.begin_read().unwrap()))
    });
    g.finish();

    // Rolling back a commit of 10,000 updates, against committing it (`commit/updates_10000`).
    let mut g = c.benchmark_group("rollback");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("updates_10000", |b| {
        b.iter_batched(
            || {
                for _ in 0..10_000 {
                    f.db.insert(f.keys[rng.below(KEYS)], rng.value32()).unwrap();
                }
                f.db.commit().unwrap();
            },
            |()| f.db.rollback().unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // The witness of a commit of 10,000 updates.
    let mut g = c.benchmark_group("witness");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let commit_of_10k = |rng: &mut DetRng| {
        for _ in 0..10_000 {
            f.db.insert(f.keys[rng.below(KEYS)], rng.value32()).unwrap();
        }
        f.db.commit().unwrap()
    };
    {
        let done = commit_of_10k(&mut rng);
        let witness = done.generate_witness().unwrap();
        let separate: usize = witness
            .proof
            .proofs_of(&witness.keys)
            .unwrap()
            .iter()
            .map(|p| p.encode().len())
            .sum();
        let size = witness.encode().len();
        let proof = witness.proof.encode().len();
        eprintln!(
            "witness of a 10,000-update commit: {size} bytes ({proof} of multiproof); \
             {separate} bytes of separate proofs of its keys ({:.2}x the witness, {:.2}x its \
             multiproof)",
            separate as f64 / size as f64,
            separate as f64 / proof as f64
        );
    }
    g.bench_function("generate_updates_10000", |b| {
        b.iter_batched(
            || commit_of_10k(&mut rng),
            |done| black_box(done.generate_witness().unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("proof");
    g.bench_function("generate_from_disk", |b| {
        b.iter_batched(
            || f.keys[rng.below(KEYS)],
            |k| black_box(f.db.generate_proof(k).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let root = f.db.root();
    let k = f.keys[5];
    let v = f.db.get(k).unwrap();
    let proof = f.db.generate_proof(k).unwrap();
    g.bench_function("verify", |b| {
        b.iter(|| proof.verify(&k, v.as_deref(), &root).unwrap())
    });
    g.finish();
}

criterion_group!(db, benches);
criterion_main!(db);
