//! Request path normalisation, so that routing and the backend see one
//! spelling of each path: a route prefix cannot be escaped with `..`, `%2e`
//! or repeated slashes.
//!
//! Steps, in order (as Envoy's path normaliser): percent-escapes of
//! unreserved characters are decoded and the hex of every other escape is
//! uppercased (RFC 3986 §2.3, §6.2.2.1), with `%2F` and `%5C` handled as the
//! listener says; repeated slashes are merged when the listener asks; dot
//! segments are removed (RFC 3986 §5.2.4). Merging comes before dot removal
//! so that `/a//../b` goes where a file system would take it (`/b`), as in
//! nginx. A path that climbs above `/` and a malformed escape are errors,
//! not silently repaired: the backend might read them differently.

use std::borrow::Cow;

use lb_config::{EscapedSlashes, PathNormalization};

/// Why a path cannot be normalised; the request is answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `..` segments climb above the root.
    #[error("the request path climbs above the root")]
    AboveRoot,
    /// A `%` not followed by two hex digits.
    #[error("the request path has a malformed percent-escape")]
    BadEscape,
    /// `%2F` or `%5C` on a listener with `escaped_slashes = "reject"`.
    #[error("the request path has an encoded slash or backslash")]
    EscapedSlash,
}

/// The normal form of `path` (the path of a request target, without the
/// query); borrowed when `path` is already normal, so the common case
/// allocates nothing. Only an absolute path is normalised: the
/// asterisk-form (`OPTIONS *`) is returned as it is.
pub fn normalize_path<'a>(
    path: &'a str,
    rules: &PathNormalization,
) -> Result<Cow<'a, str>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes(), rules)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, rules)?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// Whether `path` is already in normal form; errors found on the way are
/// returned at once, the rest are left to the full pass.
fn is_normal(path: &[u8], rules: &PathNormalization) -> Result<bool, PathError> {
    let mut segment_start = 1;
    let mut i = 1;
    while i <= path.len() {
        match path.get(i) {
            None | Some(b'/') => {
                let segment = path.get(segment_start..i).unwrap_or_default();
                if segment == b"." || segment == b".." {
                    return Ok(false);
                }
                if rules.merge_slashes && segment.is_empty() && i < path.len() {
                    return Ok(false);
                }
                segment_start = i + 1;
            }
            Some(b'%') => {
                let (hi, lo) = (path.get(i + 1), path.get(i + 2));
                let byte = escaped_byte(hi, lo)?;
                let upper = hi
                    .zip(lo)
                    .is_some_and(|(h, l)| !h.is_ascii_lowercase() && !l.is_ascii_lowercase());
                if !upper || unreserved(byte) {
                    return Ok(false);
                }
                if matches!(byte, b'/' | b'\\') {
                    match rules.escaped_slashes {
                        EscapedSlashes::Keep => {}
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Decode => return Ok(false),
                    }
                }
                i += 2;
            }
            Some(_) => {}
        }
        i += 1;
    }
    Ok(true)
}

/// Decode unreserved escapes, uppercase the others, apply the escaped
/// slash rule, and merge slashes when asked.
fn decode(path: &str, rules: &PathNormalization) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let push_slash = |out: &mut String| {
        if !(rules.merge_slashes && out.ends_with('/')) {
            out.push('/');
        }
    };
    let mut rest = path;
    while let Some(at) = rest.find(['%', '/']) {
        let (before, tail) = rest.split_at(at);
        out.push_str(before);
        let bytes = tail.as_bytes();
        if bytes.first() == Some(&b'/') {
            push_slash(&mut out);
            rest = tail.get(1..).unwrap_or_default();
            continue;
        }
        let byte = escaped_byte(bytes.get(1), bytes.get(2))?;
        match byte {
            b'/' | b'\\' => match rules.escaped_slashes {
                EscapedSlashes::Keep => push_escape(&mut out, byte),
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => push_slash(&mut out),
            },
            b if unreserved(b) => out.push(char::from(b)),
            b => push_escape(&mut out, b),
        }
        rest = tail.get(3..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path, except that climbing above the
/// root is an error instead of stopping at `/`.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let relative = path.strip_prefix('/').unwrap_or(path);
    let mut kept: Vec<&str> = Vec::new();
    // A path ending in a dot segment names a directory: keep its slash.
    let mut trailing_slash = false;
    for segment in relative.split('/') {
        trailing_slash = false;
        match segment {
            "." => trailing_slash = true,
            ".." => {
                kept.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The byte of the escape whose hex digits are `hi` and `lo`.
fn escaped_byte(hi: Option<&u8>, lo: Option<&u8>) -> Result<u8, PathError> {
    let digit = |d: Option<&u8>| {
        d.and_then(|d| char::from(*d).to_digit(16))
            .ok_or(PathError::BadEscape)
    };
    let value = digit(hi)? * 16 + digit(lo)?;
    u8::try_from(value).map_err(|_| PathError::BadEscape)
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    for nibble in [byte >> 4, byte & 0x0f] {
        if let Some(&d) = HEX.get(usize::from(nibble)) {
            out.push(char::from(d));
        }
    }
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests;
