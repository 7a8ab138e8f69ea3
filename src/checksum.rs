//! BigBlueButton's checksum rules: finding and stripping the `checksum`
//! parameter of a raw query, picking the hash by the checksum's length,
//! verifying in constant time, and signing a query for a backend.
//!
//! Everything here is pure: no I/O, no configuration. The rules follow
//! bbb-web (`GetChecksumValidator`, `PostChecksum`) to the letter, because a
//! balancer that is stricter or looser than BBB breaks some client.

use sha1::{Digest, Sha1};
use sha2::{Sha256, Sha384, Sha512};
use std::fmt;

/// A hash BBB accepts for checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha384,
        Algorithm::Sha512,
    ];

    /// BBB picks the algorithm from the checksum's length in hex digits.
    pub fn from_hex_len(len: usize) -> Option<Algorithm> {
        match len {
            40 => Some(Algorithm::Sha1),
            64 => Some(Algorithm::Sha256),
            96 => Some(Algorithm::Sha384),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// Parses `sha1`, `sha256`, `sha384`, `sha512` (any case).
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.trim().to_ascii_lowercase().as_str() {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Appends the lower-case hex of H(parts concatenated) to `out`.
    fn push_hex_digest(self, parts: &[&[u8]], out: &mut String) {
        fn run<D: Digest>(parts: &[&[u8]], out: &mut String) {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            let digest = hasher.finalize();
            let mut hex = [0u8; 128];
            let hex = &mut hex[..digest.len() * 2];
            hex::encode_to_slice(digest, hex).expect("buffer fits SHA-512");
            out.push_str(std::str::from_utf8(hex).expect("hex is ASCII"));
        }
        match self {
            Algorithm::Sha1 => run::<Sha1>(parts, out),
            Algorithm::Sha256 => run::<Sha256>(parts, out),
            Algorithm::Sha384 => run::<Sha384>(parts, out),
            Algorithm::Sha512 => run::<Sha512>(parts, out),
        }
    }

    /// Length of this algorithm's checksum in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request's checksum could not even be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("no checksum parameter")]
    Missing,
    #[error("more than one checksum parameter")]
    Duplicate,
    #[error("checksum does not match")]
    Mismatch,
}

/// A raw query split into the part that is signed and the checksum given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitQuery<'a> {
    /// The raw query with the checksum removed exactly as bbb-web removes it.
    pub unsigned: String,
    /// The checksum's raw value, as the client sent it.
    pub checksum: &'a str,
}

/// Finds the one `checksum` parameter of a raw query and removes it the way
/// bbb-web does: plain string replacement of `&checksum=X`, then
/// `checksum=X&`, then `checksum=X`. So `?&checksum=X` is signed over "".
///
/// ```
/// use tinyscale::checksum::{split_checksum, ChecksumError};
/// let split = split_checksum("meetingID=a%20b&checksum=ab12&name=x").unwrap();
/// assert_eq!((split.unsigned.as_str(), split.checksum), ("meetingID=a%20b&name=x", "ab12"));
/// assert_eq!(split_checksum("&checksum=ab12").unwrap().unsigned, "");
/// assert_eq!(split_checksum("checksum=1&checksum=1"), Err(ChecksumError::Duplicate));
/// ```
pub fn split_checksum(raw_query: &str) -> Result<SplitQuery<'_>, ChecksumError> {
    let mut found: Option<&str> = None;
    for pair in raw_query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "checksum" {
            if found.is_some() {
                return Err(ChecksumError::Duplicate);
            }
            found = Some(value);
        }
    }
    let checksum = found.ok_or(ChecksumError::Missing)?;
    let unsigned = strip_like_bbb(raw_query, checksum);
    Ok(SplitQuery { unsigned, checksum })
}

/// bbb-web's three string replacements, in order. The usual query holds
/// `checksum=X` once: then one cut gives the same string without building
/// three new ones (this runs on every request).
fn strip_like_bbb(raw_query: &str, checksum: &str) -> String {
    let mut found = occurrences(raw_query, checksum);
    if let (Some(at), None) = (found.next(), found.next()) {
        let end = at + "checksum=".len() + checksum.len();
        let (cut_start, cut_end) = if raw_query[..at].ends_with('&') {
            (at - 1, end)
        } else if raw_query[end..].starts_with('&') {
            (at, end + 1)
        } else {
            (at, end)
        };
        let mut unsigned = String::with_capacity(raw_query.len() - (cut_end - cut_start));
        unsigned.push_str(&raw_query[..cut_start]);
        unsigned.push_str(&raw_query[cut_end..]);
        // A cut can join two halves into a new `checksum=X`, which the next
        // replacement would remove too: then do exactly what bbb-web does.
        if occurrences(&unsigned, checksum).next().is_none() {
            return unsigned;
        }
    }
    let needle = format!("checksum={checksum}");
    raw_query
        .replace(&format!("&{needle}"), "")
        .replace(&format!("{needle}&"), "")
        .replace(&needle, "")
}

/// Where `checksum=X` starts in `text`, left to right, not overlapping (as
/// `str::match_indices` finds them). A scan for its first byte: cheaper
/// than a substring searcher for a query of a few hundred bytes.
fn occurrences<'a>(text: &'a str, checksum: &'a str) -> impl Iterator<Item = usize> + 'a {
    let bytes = text.as_bytes();
    let len = "checksum=".len() + checksum.len();
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(i) = memchr::memchr(b'c', &bytes[from..]) {
            let at = from + i;
            let rest = &bytes[at..];
            if rest.starts_with(b"checksum=") && rest[9..].starts_with(checksum.as_bytes()) {
                from = at + len;
                return Some(at);
            }
            from = at + 1;
        }
        None
    })
}

/// Computes the checksum of `call` + `unsigned_query` + `secret`.
///
/// The test vector of BBB's documentation:
/// ```
/// use tinyscale::checksum::{sign, Algorithm};
/// let query = "name=Test+Meeting&meetingID=abc123&attendeePW=111222&moderatorPW=333444";
/// let secret = "639259d4-9dd8-4b25-bf01-95f9567eaf4b";
/// assert_eq!(sign("create", query, secret, Algorithm::Sha1), "1fcbb0c4fc1f039f73aa6d697d2db9ba7f803f17");
/// ```
pub fn sign(call: &str, unsigned_query: &str, secret: &str, algorithm: Algorithm) -> String {
    let mut out = String::with_capacity(algorithm.hex_len());
    push_sign(&mut out, call, unsigned_query, secret, algorithm);
    out
}

/// [`sign`], appended to `out`.
fn push_sign(
    out: &mut String,
    call: &str,
    unsigned_query: &str,
    secret: &str,
    algorithm: Algorithm,
) {
    algorithm.push_hex_digest(
        &[
            call.as_bytes(),
            unsigned_query.as_bytes(),
            secret.as_bytes(),
        ],
        out,
    );
}

/// Checks a checksum as bbb-web does: the algorithm is chosen by the
/// checksum's length and must be one of `allowed`; hex is compared without
/// regard to case, in constant time.
pub fn verify(
    call: &str,
    unsigned_query: &str,
    checksum: &str,
    secret: &str,
    allowed: &[Algorithm],
) -> Result<(), ChecksumError> {
    let algorithm = Algorithm::from_hex_len(checksum.len())
        .filter(|a| allowed.contains(a))
        .ok_or(ChecksumError::Mismatch)?;
    let expected = sign(call, unsigned_query, secret, algorithm);
    if constant_time_eq_ignore_ascii_case(expected.as_bytes(), checksum.as_bytes()) {
        Ok(())
    } else {
        Err(ChecksumError::Mismatch)
    }
}

/// Compares without an early exit, so the time taken says nothing about how
/// many leading characters matched.
fn constant_time_eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x.to_ascii_lowercase() ^ y.to_ascii_lowercase();
    }
    diff == 0
}

/// `unsigned_query` followed by `checksum=…` for `secret`: the query string a
/// backend receives. The client's bytes are kept as they are.
pub fn signed_query(
    call: &str,
    unsigned_query: &str,
    secret: &str,
    algorithm: Algorithm,
) -> String {
    let mut out = String::new();
    push_signed_query(&mut out, call, unsigned_query, secret, algorithm);
    out
}

/// [`signed_query`], appended to `out` (a URL being built), in one
/// allocation at most.
pub fn push_signed_query(
    out: &mut String,
    call: &str,
    unsigned_query: &str,
    secret: &str,
    algorithm: Algorithm,
) {
    out.reserve(unsigned_query.len() + "&checksum=".len() + algorithm.hex_len());
    out.push_str(unsigned_query);
    if !unsigned_query.is_empty() {
        out.push('&');
    }
    out.push_str("checksum=");
    push_sign(out, call, unsigned_query, secret, algorithm);
}

/// The string bbb-web 2.7+ signs for a form POST whose URL query is empty:
/// the body's parameters sorted by name, `checksum` left out, each value
/// URL-encoded (space as `+`), joined with `&`. Also returns the body's
/// checksum value(s).
pub fn form_body_signing_string(body: &[u8]) -> (String, Vec<String>) {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let checksums = params
        .iter()
        .filter(|(k, _)| k == "checksum")
        .map(|(_, v)| v.clone())
        .collect();
    params.retain(|(k, _)| k != "checksum");
    // A stable sort keeps several values of one name in the order they came,
    // as Java's TreeSet over a servlet parameter map does. Java compares
    // UTF-16 code units; for the ASCII names BBB uses, that is byte order.
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (i, (key, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    }
    (out, checksums)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_SECRET: &str = "639259d4-9dd8-4b25-bf01-95f9567eaf4b";
    const DOC_QUERY: &str =
        "name=Test+Meeting&meetingID=abc123&attendeePW=111222&moderatorPW=333444";

    #[test]
    fn documentation_test_vector() {
        assert_eq!(
            sign("create", DOC_QUERY, DOC_SECRET, Algorithm::Sha1),
            "1fcbb0c4fc1f039f73aa6d697d2db9ba7f803f17"
        );
    }

    #[test]
    fn verify_accepts_every_algorithm_and_any_case() {
        for algorithm in Algorithm::ALL {
            let sum = sign("create", DOC_QUERY, DOC_SECRET, algorithm);
            assert_eq!(Algorithm::from_hex_len(sum.len()), Some(algorithm));
            assert!(verify("create", DOC_QUERY, &sum, DOC_SECRET, &Algorithm::ALL).is_ok());
            let upper = sum.to_ascii_uppercase();
            assert!(verify("create", DOC_QUERY, &upper, DOC_SECRET, &Algorithm::ALL).is_ok());
            assert_eq!(
                verify("join", DOC_QUERY, &sum, DOC_SECRET, &Algorithm::ALL),
                Err(ChecksumError::Mismatch)
            );
        }
    }

    #[test]
    fn verify_refuses_algorithms_not_allowed_and_odd_lengths() {
        let sum = sign("create", DOC_QUERY, DOC_SECRET, Algorithm::Sha1);
        assert!(verify("create", DOC_QUERY, &sum, DOC_SECRET, &[Algorithm::Sha256]).is_err());
        assert!(verify("create", DOC_QUERY, &sum[..39], DOC_SECRET, &Algorithm::ALL).is_err());
        assert!(verify("create", DOC_QUERY, "", DOC_SECRET, &Algorithm::ALL).is_err());
    }

    #[test]
    fn split_removes_checksum_anywhere() {
        let s = split_checksum("a=1&checksum=abc&b=2").unwrap();
        assert_eq!((s.unsigned.as_str(), s.checksum), ("a=1&b=2", "abc"));
        let s = split_checksum("checksum=abc&b=2").unwrap();
        assert_eq!(s.unsigned, "b=2");
        let s = split_checksum("a=1&checksum=abc").unwrap();
        assert_eq!(s.unsigned, "a=1");
        let s = split_checksum("checksum=abc").unwrap();
        assert_eq!(s.unsigned, "");
    }

    #[test]
    fn split_of_php_library_get_meetings_signs_empty_string() {
        let s = split_checksum("&checksum=abc").unwrap();
        assert_eq!(s.unsigned, "");
    }

    #[test]
    fn the_quick_cut_matches_bbb_replacements() {
        let slow = |q: &str, x: &str| {
            q.replace(&format!("&checksum={x}"), "")
                .replace(&format!("checksum={x}&"), "")
                .replace(&format!("checksum={x}"), "")
        };
        for q in [
            "a=1&checksum=ab&b=2",
            "checksum=ab&b=2",
            "a=1&checksum=ab",
            "checksum=ab",
            "&checksum=ab",
            "checksum=ab&",
            "a=checksum=ab&checksum=ab",
            "x=check&checksum=absum=ab",
            "name=checksum=abc&checksum=ab",
            "a=1&&checksum=ab&&b=2",
            "checksum=abchecksum=ab",
            "cchecksum=ab&c=checksum=a",
            "checksum=checksum=ab&checksum=ab",
        ] {
            assert_eq!(strip_like_bbb(q, "ab"), slow(q, "ab"), "{q}");
        }
    }

    #[test]
    fn split_refuses_missing_and_duplicate() {
        assert_eq!(split_checksum("a=1"), Err(ChecksumError::Missing));
        assert_eq!(split_checksum(""), Err(ChecksumError::Missing));
        assert_eq!(
            split_checksum("checksum=x&a=1&checksum=x"),
            Err(ChecksumError::Duplicate)
        );
    }

    #[test]
    fn split_keeps_raw_bytes() {
        let s = split_checksum("name=A%20B+C&meetingID=%C3%BC&checksum=ff").unwrap();
        assert_eq!(s.unsigned, "name=A%20B+C&meetingID=%C3%BC");
    }

    #[test]
    fn signed_query_appends_checksum() {
        let q = signed_query("getMeetings", "", "s", Algorithm::Sha1);
        assert!(q.starts_with("checksum=") && q.len() == 9 + 40);
        let q = signed_query("create", "a=1", "s", Algorithm::Sha256);
        assert!(q.starts_with("a=1&checksum=") && q.len() == 13 + 64);
    }

    #[test]
    fn form_body_is_sorted_and_reencoded() {
        let (s, sums) =
            form_body_signing_string(b"name=Test%20Meeting&meetingID=abc&checksum=ff&attendeePW=1");
        assert_eq!(s, "attendeePW=1&meetingID=abc&name=Test+Meeting");
        assert_eq!(sums, vec!["ff".to_string()]);
        let (s, _) = form_body_signing_string(b"b=%C3%BC*._-~&a=x");
        assert_eq!(s, "a=x&b=%C3%BC*._-%7E");
    }
}
