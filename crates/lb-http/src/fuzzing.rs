//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature,
//! never enabled in the gateway's own build). Each reads its input the way
//! a connection does, once whole and once in pieces whose sizes come from
//! the input's first bytes, and panics when the two readings differ: the
//! panic is how a fuzzer reports a finding.
#![allow(clippy::panic)]

use crate::h1::replay::{read_all, read_responses};

/// Piece sizes from the first two bytes, and the rest as the input.
fn split(data: &[u8]) -> ([usize; 2], &[u8]) {
    match data {
        [a, b, rest @ ..] => ([usize::from(*a) % 97 + 1, usize::from(*b) % 13 + 1], rest),
        _ => ([1, 1], &[]),
    }
}

/// Requests as the HTTP/1.1 front parses and frames them.
pub fn h1_requests(data: &[u8]) {
    let (pieces, input) = split(data);
    let whole = read_all(input, &[input.len().max(1)]);
    let pieced = read_all(input, &pieces);
    if whole != pieced {
        panic!("requests read differently in pieces {pieces:?}: {whole:?} vs {pieced:?}");
    }
}

/// Responses as the HTTP/1.1 client side parses and frames them.
pub fn h1_responses(data: &[u8]) {
    let (pieces, input) = split(data);
    let whole = read_responses(input, &[input.len().max(1)]);
    let pieced = read_responses(input, &pieces);
    if whole != pieced {
        panic!("responses read differently in pieces {pieces:?}: {whole:?} vs {pieced:?}");
    }
}
