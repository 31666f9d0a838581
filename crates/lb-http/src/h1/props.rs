//! Properties of request and response framing over generated and mutated
//! messages: whatever the bytes, parsing never panics and reading them in
//! pieces gives exactly what reading them whole gives; well-formed
//! messages give back their body and leave what follows untouched.

use proptest::prelude::*;

use super::replay::{read_all, read_responses};

/// `body` as chunks of the given sizes, each opened by the size line
/// `line` writes (the last chunk and trailers are the caller's).
fn put_chunks(out: &mut Vec<u8>, body: &[u8], sizes: &[usize], line: impl Fn(usize) -> String) {
    let mut rest = body;
    let mut sizes = sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        out.extend_from_slice(line(n).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
}

/// A well-formed request with `body`, framed by length or in chunks of
/// the given sizes, with optional trailers.
fn request(body: &[u8], chunks: Option<&[usize]>, trailer: bool) -> Vec<u8> {
    let mut out = b"POST /upload?x=1 HTTP/1.1\r\nHost: app.example.com\r\nX-Id: 7\r\n".to_vec();
    match chunks {
        None => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        }
        Some(sizes) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            put_chunks(&mut out, body, sizes, |n| format!("{n:X};e=1"));
            out.extend_from_slice(b"0\r\n");
            if trailer {
                out.extend_from_slice(b"x-checksum: abc\r\n");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// A mutation of a request: bytes replaced, inserted or removed.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn mutate(input: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = input.len().max(1);
        match *m {
            Mutation::Replace(at, b) => {
                if let Some(slot) = input.get_mut(at % len) {
                    *slot = b;
                }
            }
            Mutation::Insert(at, b) => input.insert(at % (input.len() + 1), b),
            Mutation::Remove(at) => {
                if !input.is_empty() {
                    input.remove(at % len);
                }
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to framing more often than any others.
    let byte = prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b':'),
        Just(b' '),
        Just(b'0'),
        Just(b';'),
        Just(b','),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(a, b)| Mutation::Replace(a, b)),
        (any::<usize>(), byte).prop_map(|(a, b)| Mutation::Insert(a, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn well_formed_requests_give_back_their_body_and_what_follows(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        chunked in any::<bool>(),
        chunks in proptest::collection::vec(1usize..700, 1..6),
        trailer in any::<bool>(),
        pieces in proptest::collection::vec(1usize..600, 1..6),
    ) {
        let mut input = request(&body, chunked.then_some(&chunks[..]), trailer);
        input.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: b\r\n\r\n");
        let outcome = read_all(&input, &pieces);
        prop_assert_eq!(outcome.broken_body, None);
        prop_assert_eq!(outcome.requests.len(), 2);
        let first = outcome.requests.first().unwrap().as_ref().unwrap();
        prop_assert_eq!(&first.body, &body);
        prop_assert_eq!(first.trailers.is_some(), chunked && trailer);
        let second = outcome.requests.get(1).unwrap().as_ref().unwrap();
        prop_assert_eq!(&second.target, "/next");
        prop_assert!(outcome.left.is_empty());
    }

    #[test]
    fn mutated_requests_read_the_same_in_any_pieces(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        chunked in any::<bool>(),
        chunks in proptest::collection::vec(1usize..200, 1..4),
        mutations in proptest::collection::vec(mutation(), 1..6),
        pieces in proptest::collection::vec(1usize..300, 1..6),
    ) {
        let mut input = request(&body, chunked.then_some(&chunks[..]), true);
        input.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: b\r\n\r\n");
        mutate(&mut input, &mutations);
        let whole = read_all(&input, &[input.len().max(1)]);
        let pieced = read_all(&input, &pieces);
        prop_assert_eq!(whole, pieced);
    }

    #[test]
    fn arbitrary_bytes_never_break_the_parser(
        input in proptest::collection::vec(any::<u8>(), 0..2000),
        pieces in proptest::collection::vec(1usize..300, 1..4),
    ) {
        let whole = read_all(&input, &[input.len().max(1)]);
        let pieced = read_all(&input, &pieces);
        prop_assert_eq!(whole, pieced);
    }
}

#[test]
fn a_head_split_anywhere_parses_the_same() {
    let input = request(b"hello", None, false);
    for split in 1..input.len() {
        let outcome = read_all(&input, &[split]);
        let first = outcome.requests.first().unwrap().as_ref().unwrap();
        assert_eq!(first.body, b"hello", "split at {split}");
    }
}

/// An interim response, a `200` with `body` (by length or in chunks with a
/// trailer), and a `204`.
fn responses(body: &[u8], chunks: Option<&[usize]>) -> Vec<u8> {
    let mut out = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer: t\r\n".to_vec();
    match chunks {
        None => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        }
        Some(sizes) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            put_chunks(&mut out, body, sizes, |n| format!("{n:x}"));
            out.extend_from_slice(b"0\r\nGrpc-Status: 0\r\n\r\n");
        }
    }
    out.extend_from_slice(b"HTTP/1.1 204 No Content\r\nX-Next: 1\r\n\r\n");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Well-formed responses give back their body, then the next response.
    #[test]
    fn well_formed_responses_give_back_their_body_and_what_follows(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        chunked in any::<bool>(),
        chunks in proptest::collection::vec(1usize..700, 1..6),
        pieces in proptest::collection::vec(1usize..600, 1..6),
    ) {
        let input = responses(&body, chunked.then_some(chunks.as_slice()));
        let read = read_responses(&input, &pieces);
        prop_assert_eq!(read.broken_body, None);
        prop_assert_eq!(read.responses.len(), 2);
        let Some(Ok((status, _, got, trailers))) = read.responses.first() else {
            return Err(TestCaseError::fail("no first response"));
        };
        prop_assert_eq!(*status, 200);
        prop_assert_eq!(got, &body);
        prop_assert_eq!(trailers.is_some(), chunked);
        prop_assert!(matches!(read.responses.get(1), Some(Ok((204, _, b, None))) if b.is_empty()));
        prop_assert!(read.left.is_empty());
    }

    /// Mutated responses read the same however the bytes arrive.
    #[test]
    fn mutated_responses_read_the_same_in_any_pieces(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        chunked in any::<bool>(),
        chunks in proptest::collection::vec(1usize..200, 1..4),
        mutations in proptest::collection::vec(mutation(), 1..6),
        pieces in proptest::collection::vec(1usize..300, 1..6),
    ) {
        let mut input = responses(&body, chunked.then_some(chunks.as_slice()));
        mutate(&mut input, &mutations);
        let whole = read_responses(&input, &[input.len().max(1)]);
        let pieced = read_responses(&input, &pieces);
        prop_assert_eq!(whole, pieced);
    }

    /// Arbitrary bytes from a backend never break the client side.
    #[test]
    fn arbitrary_response_bytes_read_the_same_in_any_pieces(
        input in proptest::collection::vec(any::<u8>(), 0..2000),
        pieces in proptest::collection::vec(1usize..300, 1..4),
    ) {
        let whole = read_responses(&input, &[input.len().max(1)]);
        let pieced = read_responses(&input, &pieces);
        prop_assert_eq!(whole, pieced);
    }
}
