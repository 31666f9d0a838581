use proptest::prelude::*;

use super::*;

fn rules(merge_slashes: bool, escaped_slashes: EscapedSlashes) -> PathNormalization {
    PathNormalization {
        merge_slashes,
        escaped_slashes,
    }
}

fn default_rules() -> PathNormalization {
    rules(true, EscapedSlashes::Keep)
}

fn norm(path: &str) -> Result<String, PathError> {
    normalize_path(path, &default_rules()).map(Cow::into_owned)
}

#[test]
fn normal_paths_are_borrowed() {
    for path in [
        "/",
        "/a/b",
        "/a/b/",
        "/a%20b",
        "/a%2Fb",
        "/a%5Cb",
        "/a.b/..c/.../g..",
        "/%C3%A9",
        "/é",
        "/a\\..\\b",
        "*",
    ] {
        let got = normalize_path(path, &default_rules());
        assert!(
            matches!(got, Ok(Cow::Borrowed(p)) if p == path),
            "{path}: {got:?}"
        );
    }
}

#[test]
fn rfc3986_dot_segment_examples() {
    // RFC 3986 §5.2.4 and the absolute paths of the §5.4.1 examples.
    let cases = [
        ("/a/b/c/./../../g", "/a/g"),
        ("/b/c/../g", "/b/g"),
        ("/b/c/../..", "/"),
        ("/b/c/../../g", "/g"),
        ("/b/c/./", "/b/c/"),
        ("/b/c/.", "/b/c/"),
        ("/b/c/..", "/b/"),
        ("/b/c/../", "/b/"),
        ("/b/c/g.", "/b/c/g."),
        ("/b/c/.g", "/b/c/.g"),
        ("/b/c/g..", "/b/c/g.."),
        ("/b/c/..g", "/b/c/..g"),
        ("/b/c/./../g", "/b/g"),
        ("/b/c/./g/.", "/b/c/g/"),
        ("/b/c/g/./h", "/b/c/g/h"),
        ("/b/c/g/../h", "/b/c/h"),
        ("/b/c/g;x=1/./y", "/b/c/g;x=1/y"),
        ("/b/c/g;x=1/../y", "/b/c/y"),
        ("/.", "/"),
    ];
    for (path, want) in cases {
        assert_eq!(norm(path).as_deref(), Ok(want), "{path}");
    }
}

#[test]
fn encoded_dots_are_dot_segments() {
    for path in [
        "/pub/../admin",
        "/pub/%2e%2e/admin",
        "/pub/%2E%2E/admin",
        "/pub/.%2e/admin",
        "/pub/%2E./admin",
        "/pub/./%2e/../admin",
    ] {
        assert_eq!(norm(path).as_deref(), Ok("/admin"), "{path}");
    }
}

#[test]
fn unreserved_escapes_are_decoded_and_others_uppercased() {
    let cases = [
        ("/%41%62%7e%2D%5f%30", "/Ab~-_0"),
        ("/%c3%a9", "/%C3%A9"),
        ("/a%3ab%3A", "/a%3Ab%3A"),
        ("/%25", "/%25"),
        ("/%2541", "/%2541"),
        ("/a%2fb", "/a%2Fb"),
        ("/a%5cb", "/a%5Cb"),
    ];
    for (path, want) in cases {
        assert_eq!(norm(path).as_deref(), Ok(want), "{path}");
    }
}

#[test]
fn slashes_merge_unless_turned_off() {
    assert_eq!(norm("//a///b").as_deref(), Ok("/a/b"));
    assert_eq!(norm("/a/b//").as_deref(), Ok("/a/b/"));
    assert_eq!(norm("/a//../b").as_deref(), Ok("/b"));
    let keep = rules(false, EscapedSlashes::Keep);
    assert!(matches!(
        normalize_path("//a///b", &keep),
        Ok(Cow::Borrowed("//a///b"))
    ));
    // Without merging an empty segment is a segment like any other.
    assert_eq!(normalize_path("/a//../b", &keep).as_deref(), Ok("/a/b"));
    assert_eq!(normalize_path("//../b", &keep).as_deref(), Ok("/b"));
}

#[test]
fn climbing_above_the_root_is_an_error() {
    for path in [
        "/..",
        "/../x",
        "/a/../..",
        "/%2e%2e",
        "/a/%2E%2e/../b",
        "//..",
    ] {
        assert_eq!(norm(path), Err(PathError::AboveRoot), "{path}");
    }
}

#[test]
fn malformed_escapes_are_errors() {
    for path in ["/%", "/a%4", "/%zz", "/a%g1/", "/%%41"] {
        assert_eq!(norm(path), Err(PathError::BadEscape), "{path}");
    }
}

#[test]
fn escaped_slashes_follow_the_listener_mode() {
    let keep = rules(true, EscapedSlashes::Keep);
    let reject = rules(true, EscapedSlashes::Reject);
    let decode = rules(true, EscapedSlashes::Decode);
    let run = |path: &str, r: &PathNormalization| normalize_path(path, r).map(Cow::into_owned);
    // Keep: never a separator, so `..%2F` is no dot segment.
    assert_eq!(
        run("/pub/..%2Fadmin", &keep).as_deref(),
        Ok("/pub/..%2Fadmin")
    );
    assert_eq!(run("/a%2f%5cb", &keep).as_deref(), Ok("/a%2F%5Cb"));
    for path in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb", "/a%2e%2e%2F"] {
        assert_eq!(run(path, &reject), Err(PathError::EscapedSlash), "{path}");
    }
    assert_eq!(run("/a/b", &reject).as_deref(), Ok("/a/b"));
    // Decode: both become `/` before dot segments and merging.
    assert_eq!(run("/a%2Fb", &decode).as_deref(), Ok("/a/b"));
    assert_eq!(run("/a%5cb", &decode).as_deref(), Ok("/a/b"));
    assert_eq!(run("/pub/..%2Fadmin", &decode).as_deref(), Ok("/admin"));
    assert_eq!(
        run("/pub%2F%2E%2E%5Cadmin", &decode).as_deref(),
        Ok("/admin")
    );
    assert_eq!(run("/a%2F%2Fb", &decode).as_deref(), Ok("/a/b"));
    assert_eq!(
        run("/a%2F%2Fb", &rules(false, EscapedSlashes::Decode)).as_deref(),
        Ok("/a//b")
    );
    assert_eq!(run("/%2F..", &decode), Err(PathError::AboveRoot));
}

const TOKENS: &[&str] = &[
    "/", "//", ".", "..", "a", "B", "~", "-", "%2e", "%2E", "%2F", "%2f", "%5C", "%5c", "%41",
    "%7e", "%20", "%c3%a9", "%25", "%", "%z", "é", "\\", ";x=1",
];

fn any_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..16)
        .prop_map(|tokens| format!("/{}", tokens.concat()))
}

fn any_rules() -> impl Strategy<Value = PathNormalization> {
    let mode = prop::sample::select(vec![
        EscapedSlashes::Keep,
        EscapedSlashes::Reject,
        EscapedSlashes::Decode,
    ]);
    (any::<bool>(), mode).prop_map(|(merge, mode)| rules(merge, mode))
}

proptest! {
    /// A normalised path is normal: normalising it again changes nothing
    /// and, through the fast check, allocates nothing.
    #[test]
    fn normalising_is_idempotent(path in any_path(), r in any_rules()) {
        if let Ok(once) = normalize_path(&path, &r) {
            let twice = normalize_path(&once, &r);
            prop_assert!(matches!(twice, Ok(Cow::Borrowed(p)) if p == once), "{path} -> {once} -> {twice:?}");
        }
    }

    /// What routing sees has no dot segment, no repeated slash when they
    /// merge, and only uppercase escapes of reserved characters; an
    /// escaped slash survives only under `keep`.
    #[test]
    fn normal_form_invariants(path in any_path(), r in any_rules()) {
        let Ok(out) = normalize_path(&path, &r) else {
            return Ok(());
        };
        prop_assert!(out.starts_with('/'));
        prop_assert!(!out.split('/').any(|s| s == "." || s == ".."), "{out}");
        if r.merge_slashes {
            prop_assert!(!out.contains("//"), "{out}");
        }
        let bytes = out.as_bytes();
        for (i, _) in out.match_indices('%') {
            let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
            prop_assert!(hex.len() == 2 && hex.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)), "{out}");
            let byte = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            prop_assert!(!unreserved(byte), "{out}");
            if matches!(byte, b'/' | b'\\') {
                prop_assert_eq!(r.escaped_slashes, EscapedSlashes::Keep);
            }
        }
    }

    /// Merging slashes and dropping `.` segments never change which
    /// error a path gets from a malformed escape or a rejected slash:
    /// escapes are checked before anything else.
    #[test]
    fn escape_errors_do_not_depend_on_merging(path in any_path(), mode in any_rules()) {
        let merged = normalize_path(&path, &rules(true, mode.escaped_slashes));
        let unmerged = normalize_path(&path, &rules(false, mode.escaped_slashes));
        let escape_error = |r: &Result<Cow<'_, str>, PathError>| {
            matches!(r, Err(PathError::BadEscape | PathError::EscapedSlash))
        };
        prop_assert_eq!(escape_error(&merged), escape_error(&unmerged));
    }
}
