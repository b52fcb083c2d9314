//! Decoders of what the database reads from disk: every page kind (resealed with a valid
//! checksum so that the checks behind it are reached), flat-store entries and rollback log
//! records. Damaged input gets an error, never a panic or an unbounded allocation.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => bmt::fuzzing::page(bytes),
        1 => bmt::fuzzing::flat_entry(bytes),
        _ => bmt::fuzzing::log_record(bytes),
    }
});
