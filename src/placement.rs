//! Choosing the server for a new meeting: plain functions over a snapshot
//! of the candidates (servers that are enabled and up), so the rules are
//! easy to test. Owns no state: the round-robin position and the load
//! reservations live in `state`.

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
}
