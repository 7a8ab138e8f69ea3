//! Choosing the server for a new meeting: plain functions over a snapshot
//! of the candidates (servers that are enabled and up), so the rules are
//! easy to test. Owns no state: the round-robin position and the load
//! reservations live in `state`. Also owns the reading of create's
//! `meta_server-tag` and the pool of servers it allows.

/// One server that may take a new meeting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Participants at the last poll plus the reservations for meetings
    /// placed since.
    pub load: f64,
    /// Relative capacity (servers.json `weight`).
    pub weight: f64,
}

/// All `n` candidates, starting at `position` (taken modulo `n`) and
/// wrapping around: the first is the choice, the rest are the fallbacks.
pub fn round_robin(n: usize, position: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let start = position % n;
    (start..n).chain(0..start).collect()
}

/// All candidates by load ÷ weight, lowest first; ties keep their order.
pub fn least_loaded(candidates: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        (a.load / a.weight).total_cmp(&(b.load / b.weight))
    });
    order
}

/// The tag that stands for "a server with no tags".
pub const UNTAGGED: &str = "none";

/// What a create's `meta_server-tag` asks for: tags separated by `,` or
/// `;`, optionally ending in `!` (required rather than preferred).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServerTag {
    /// The tags, trimmed, without empty ones. None: the default pool (the
    /// untagged servers).
    pub tags: Vec<String>,
    /// `!`: no matching server means no meeting (never untagged servers).
    pub required: bool,
}

impl ServerTag {
    /// Reads the parameter; absent, empty or a lone `!` ask for nothing.
    pub fn parse(value: Option<&str>) -> ServerTag {
        let value = value.unwrap_or("").trim();
        let (list, bang) = match value.strip_suffix('!') {
            Some(list) => (list, true),
            None => (value, false),
        };
        let tags: Vec<String> = list
            .split([',', ';'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        ServerTag {
            required: bang && !tags.is_empty(),
            tags,
        }
    }

    /// Whether a server carrying `server_tags` is one of those asked for.
    fn matches(&self, server_tags: &[String]) -> bool {
        self.tags.iter().any(|tag| {
            if tag == UNTAGGED {
                server_tags.is_empty()
            } else {
                server_tags.contains(tag)
            }
        })
    }

    /// The tags as written, without the `!`, for the error message.
    pub fn shown(&self) -> String {
        self.tags.join(",")
    }
}

/// A required tag that no available server carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoServerWithTag;

/// Which of the available servers (given by their tags) a new meeting may
/// go to: those carrying one of the tags asked for; failing that, unless
/// they are required, the untagged ones. Nothing asked: the untagged ones.
/// The result may be empty (no server at all in the allowed pool).
pub fn tag_pool(asked: &ServerTag, servers: &[&[String]]) -> Result<Vec<usize>, NoServerWithTag> {
    let untagged = || {
        (0..servers.len())
            .filter(|&i| servers[i].is_empty())
            .collect()
    };
    if asked.tags.is_empty() {
        return Ok(untagged());
    }
    let matching: Vec<usize> = (0..servers.len())
        .filter(|&i| asked.matches(servers[i]))
        .collect();
    match (matching.is_empty(), asked.required) {
        (false, _) => Ok(matching),
        (true, true) => Err(NoServerWithTag),
        (true, false) => Ok(untagged()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_wraps() {
        assert_eq!(round_robin(3, 0), [0, 1, 2]);
        assert_eq!(round_robin(3, 4), [1, 2, 0]);
        assert!(round_robin(0, 7).is_empty());
    }

    #[test]
    fn least_loaded_divides_by_weight() {
        let c = |load, weight| Candidate { load, weight };
        assert_eq!(
            least_loaded(&[c(10.0, 1.0), c(15.0, 2.0), c(0.0, 1.0)]),
            [2, 1, 0]
        );
        assert_eq!(least_loaded(&[c(5.0, 1.0), c(5.0, 1.0)]), [0, 1]);
    }

    fn tag(value: &str) -> ServerTag {
        ServerTag::parse(Some(value))
    }

    #[test]
    fn server_tag_is_read() {
        let t = |tags: &[&str], required| ServerTag {
            tags: tags.iter().map(|s| s.to_string()).collect(),
            required,
        };
        assert_eq!(ServerTag::parse(None), t(&[], false));
        assert_eq!(tag(""), t(&[], false));
        assert_eq!(tag("!"), t(&[], false));
        assert_eq!(tag(" ! "), t(&[], false));
        assert_eq!(tag(" , ;!"), t(&[], false));
        assert_eq!(tag("large"), t(&["large"], false));
        assert_eq!(tag("large!"), t(&["large"], true));
        assert_eq!(
            tag(" large , eu ;none ! "),
            t(&["large", "eu", "none"], true)
        );
        assert_eq!(tag("a,,b;"), t(&["a", "b"], false));
        // Compared exactly: case and inner spaces count.
        assert_eq!(tag("Large Room"), t(&["Large Room"], false));
        assert_eq!(tag("large!").shown(), "large");
    }

    #[test]
    fn tag_pool_prefers_then_falls_back() {
        let large = vec!["large".to_string()];
        let eu = vec!["eu".to_string(), "large".to_string()];
        let none: Vec<String> = Vec::new();
        let servers: Vec<&[String]> = vec![&large, &none, &eu, &none];
        // Nothing asked, or a lone `!`: the untagged servers.
        assert_eq!(tag_pool(&ServerTag::parse(None), &servers), Ok(vec![1, 3]));
        assert_eq!(tag_pool(&tag("!"), &servers), Ok(vec![1, 3]));
        // Any one of the tags.
        assert_eq!(tag_pool(&tag("large"), &servers), Ok(vec![0, 2]));
        assert_eq!(tag_pool(&tag("eu;x"), &servers), Ok(vec![2]));
        assert_eq!(tag_pool(&tag("eu,none!"), &servers), Ok(vec![1, 2, 3]));
        assert_eq!(tag_pool(&tag("none!"), &servers), Ok(vec![1, 3]));
        // Exactly: no prefix or case matching.
        assert_eq!(tag_pool(&tag("larg"), &servers), Ok(vec![1, 3]));
        assert_eq!(tag_pool(&tag("LARGE!"), &servers), Err(NoServerWithTag));
        // Preferred but missing: the untagged servers; required: refused.
        assert_eq!(tag_pool(&tag("asia"), &servers), Ok(vec![1, 3]));
        assert_eq!(tag_pool(&tag("asia!"), &servers), Err(NoServerWithTag));
        // No untagged server: an empty pool, not an error, without `!`.
        let tagged: Vec<&[String]> = vec![&large];
        assert_eq!(tag_pool(&tag("asia"), &tagged), Ok(vec![]));
        assert_eq!(tag_pool(&ServerTag::parse(None), &tagged), Ok(vec![]));
        assert_eq!(tag_pool(&tag("none!"), &tagged), Err(NoServerWithTag));
        assert_eq!(tag_pool(&tag("x!"), &[]), Err(NoServerWithTag));
    }
}
