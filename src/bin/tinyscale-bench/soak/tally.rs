//! What came back during a soak: every answer counted by call and result,
//! and each failure kept with when it was sent and for which server's
//! meeting, so that it can be judged afterwards against when the flapping
//! server was really down and when tinyscale saw it (see [`classify`]).

use crate::load::Answer;
use std::collections::BTreeMap;

/// Failures kept for judging; any beyond count as unexpected.
const KEPT: usize = 200_000;

/// What one call got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    Right,
    /// A BBB failure answer: its messageKey and message.
    Failed {
        key: String,
        message: String,
    },
    /// Anything else that is not the right answer, described (never with a
    /// query: it would carry a checksum).
    Wrong(String),
    NoAnswer(String),
}

impl Got {
    /// `answer` when it is not the right one.
    pub fn of_wrong(answer: &Answer) -> Got {
        let field = |name| tinyscale::xml::field(&answer.body, name).map(str::to_string);
        match field("returncode").as_deref() {
            Some("FAILED") => Got::Failed {
                key: field("messageKey").unwrap_or_default(),
                message: field("message").unwrap_or_default(),
            },
            _ => Got::Wrong(describe(answer)),
        }
    }

    /// The column it is counted in.
    pub fn label(&self) -> String {
        match self {
            Got::Right => "right".into(),
            Got::Failed { key, .. } => key.clone(),
            Got::Wrong(_) => "wrong answer".into(),
            Got::NoAnswer(_) => "no answer".into(),
        }
    }
}

/// An answer in a line: status, where a redirect went (without its query,
/// which carries a checksum), its returncode and the body's size; not the
/// body itself, which may hold meeting passwords.
fn describe(answer: &Answer) -> String {
    let location = answer
        .location
        .as_deref()
        .map(|l| format!(" to {}", l.split('?').next().unwrap_or("")))
        .unwrap_or_default();
    let returncode = tinyscale::xml::field(&answer.body, "returncode").unwrap_or("none");
    format!(
        "HTTP {}{location}, returncode {returncode}, {} bytes",
        answer.status,
        answer.body.len()
    )
}

/// A call that did not get the right answer.
#[derive(Clone, Debug)]
pub struct Failure {
    pub call: String,
    /// Seconds since the start of the run.
    pub sent: f64,
    /// The server of the meeting it was about, if known.
    pub owner: Option<usize>,
    pub meeting_id: Option<String>,
    pub got: Got,
}

#[derive(Default)]
pub struct Tally {
    /// (call, result) → answers.
    pub counts: BTreeMap<(String, String), u64>,
    pub failures: Vec<Failure>,
    /// Failures beyond [`KEPT`], not judged.
    pub unkept: u64,
    /// Ticks with every connection busy: the call was not made.
    pub not_sent: u64,
}

impl Tally {
    pub fn add(&mut self, failure_or_right: Failure) {
        *self
            .counts
            .entry((failure_or_right.call.clone(), failure_or_right.got.label()))
            .or_default() += 1;
        if failure_or_right.got == Got::Right {
            return;
        }
        if self.failures.len() < KEPT {
            self.failures.push(failure_or_right);
        } else {
            self.unkept += 1;
        }
    }
}

/// One time the flapping server went down, in seconds since the start.
#[derive(Clone, Debug, PartialEq)]
pub struct Flap {
    /// "refused" or "hanging".
    pub how: &'static str,
    pub down_at: f64,
    /// When it was brought back (None if the run ended first).
    pub up_at: Option<f64>,
    /// The first sample at which tinyscale's metrics said it was down,
    /// and the first after it came back at which they said up.
    pub seen_down: Option<f64>,
    pub seen_up: Option<f64>,
}

/// Fills in when tinyscale saw each flap, from per-second samples of its
/// `tinyscale_server_up` for the server: (time, up).
pub fn seen(flaps: &mut [Flap], samples: &[(f64, Option<bool>)]) {
    for flap in flaps.iter_mut() {
        flap.seen_down = samples
            .iter()
            .find(|(t, up)| *t >= flap.down_at && *up == Some(false))
            .map(|(t, _)| *t);
        let back_from = match (flap.up_at, flap.seen_down) {
            (Some(up), Some(down)) => up.max(down),
            (Some(up), None) => up,
            (None, _) => f64::INFINITY,
        };
        flap.seen_up = samples
            .iter()
            .find(|(t, up)| *t >= back_from && *up == Some(true))
            .map(|(t, _)| *t);
    }
}

/// How a failure is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `serverUnavailable` for a meeting on the flapping server, sent
    /// while it was down or before tinyscale had seen it up again.
    Unavailable,
    /// `internalError` naming the flapping server (refused, no answer, cut
    /// off), sent while it went down and before tinyscale had seen that:
    /// tinyscale tried the server, as it must until it knows.
    GoingDown,
    /// Anything else: must not happen.
    Unexpected,
}

/// A request already sent when the server went down can fail with it.
const IN_FLIGHT: f64 = 2.0;
/// Samples are a second apart: what tinyscale did just before a sample
/// may show in the next one only.
const SAMPLE_SLACK: f64 = 1.0;
/// The most tinyscale may take to see the server down, and up again; it
/// polls every 2 s and needs 2 polls, so these are generous. Past them the
/// failures count as unexpected: a server never seen down or never seen
/// back is a fault, not an excuse.
pub const DETECT_LIMIT: f64 = 15.0;
pub const RECOVERY_LIMIT: f64 = 20.0;

/// Judges one failure. `flapping` is the server that goes down, `url` its
/// root as tinyscale names it; `end` is when the run ended.
pub fn classify(f: &Failure, flaps: &[Flap], flapping: usize, url: &str, end: f64) -> Class {
    let Got::Failed { key, message } = &f.got else {
        return Class::Unexpected;
    };
    let unavailable_window = |flap: &Flap| {
        let limit = flap.up_at.map_or(end, |up| up + RECOVERY_LIMIT);
        let until = flap.seen_up.unwrap_or(end).min(limit);
        f.sent >= flap.down_at && f.sent <= until + SAMPLE_SLACK
    };
    let going_down_window = |flap: &Flap| {
        let limit = (flap.down_at + DETECT_LIMIT).min(flap.up_at.unwrap_or(end));
        let until = flap.seen_down.unwrap_or(limit).min(limit);
        f.sent >= flap.down_at - IN_FLIGHT && f.sent <= until + SAMPLE_SLACK
    };
    if key == "serverUnavailable"
        && f.owner == Some(flapping)
        && flaps.iter().any(unavailable_window)
    {
        return Class::Unavailable;
    }
    let names_it = message.contains(&format!("server {url} "));
    if key == "internalError"
        && names_it
        && f.owner.is_none_or(|o| o == flapping)
        && flaps.iter().any(going_down_window)
    {
        return Class::GoingDown;
    }
    Class::Unexpected
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:4000";

    fn flap() -> Flap {
        Flap {
            how: "refused",
            down_at: 20.0,
            up_at: Some(45.0),
            seen_down: None,
            seen_up: None,
        }
    }

    fn failure(sent: f64, owner: Option<usize>, key: &str, message: &str) -> Failure {
        Failure {
            call: "getMeetingInfo".into(),
            sent,
            owner,
            meeting_id: Some("m".into()),
            got: Got::Failed {
                key: key.into(),
                message: message.into(),
            },
        }
    }

    fn judged(flaps: &[Flap], f: &Failure) -> Class {
        classify(f, flaps, 3, URL, 120.0)
    }

    #[test]
    fn tinyscale_seeing_a_flap_is_read_from_the_samples() {
        let mut flaps = vec![flap()];
        let samples: Vec<(f64, Option<bool>)> = (0..60)
            .map(|t| (t as f64, Some(!(21..=49).contains(&t))))
            .collect();
        seen(&mut flaps, &samples);
        assert_eq!(flaps[0].seen_down, Some(21.0));
        assert_eq!(flaps[0].seen_up, Some(50.0));
    }

    #[test]
    fn server_unavailable_is_expected_only_for_the_down_servers_meetings_in_its_window() {
        let mut f = flap();
        f.seen_down = Some(21.0);
        f.seen_up = Some(50.0);
        let flaps = [f];
        let key = "serverUnavailable";
        assert_eq!(
            judged(&flaps, &failure(30.0, Some(3), key, "")),
            Class::Unavailable
        );
        // Up again, but tinyscale has not seen it yet: still expected.
        assert_eq!(
            judged(&flaps, &failure(48.0, Some(3), key, "")),
            Class::Unavailable
        );
        assert_eq!(
            judged(&flaps, &failure(55.0, Some(3), key, "")),
            Class::Unexpected
        );
        assert_eq!(
            judged(&flaps, &failure(10.0, Some(3), key, "")),
            Class::Unexpected
        );
        // A meeting on a server that never went down.
        assert_eq!(
            judged(&flaps, &failure(30.0, Some(1), key, "")),
            Class::Unexpected
        );
        assert_eq!(
            judged(&[], &failure(30.0, Some(3), key, "")),
            Class::Unexpected
        );
        // Never seen up again: expected only up to the recovery limit.
        let mut late = flap();
        late.seen_down = Some(21.0);
        let late = [late];
        let limit = 45.0 + RECOVERY_LIMIT;
        assert_eq!(
            judged(&late, &failure(limit - 1.0, Some(3), key, "")),
            Class::Unavailable
        );
        assert_eq!(
            judged(&late, &failure(limit + 5.0, Some(3), key, "")),
            Class::Unexpected
        );
    }

    #[test]
    fn internal_errors_are_expected_only_naming_the_server_as_it_went_down() {
        let mut f = flap();
        f.seen_down = Some(24.0);
        let flaps = [f];
        let named = format!("The BigBlueButton server {URL} could not connect (refused).");
        let key = "internalError";
        assert_eq!(
            judged(&flaps, &failure(19.0, Some(3), key, &named)),
            Class::GoingDown
        );
        assert_eq!(
            judged(&flaps, &failure(22.0, None, key, &named)),
            Class::GoingDown
        );
        // Long after tinyscale knew.
        assert_eq!(
            judged(&flaps, &failure(35.0, Some(3), key, &named)),
            Class::Unexpected
        );
        // Another server named, or a meeting on another server.
        let other = "The BigBlueButton server http://127.0.0.1:4001 could not connect (refused).";
        assert_eq!(
            judged(&flaps, &failure(22.0, Some(3), key, other)),
            Class::Unexpected
        );
        assert_eq!(
            judged(&flaps, &failure(22.0, Some(0), key, &named)),
            Class::Unexpected
        );
        // Never seen down: expected only up to the detection limit.
        let unseen = [flap()];
        let limit = 20.0 + DETECT_LIMIT;
        assert_eq!(
            judged(&unseen, &failure(limit - 1.0, Some(3), key, &named)),
            Class::GoingDown
        );
        assert_eq!(
            judged(&unseen, &failure(limit + 5.0, Some(3), key, &named)),
            Class::Unexpected
        );
    }

    #[test]
    fn a_wrong_answer_is_described_without_its_query() {
        let answer = Answer {
            status: 302,
            location: Some(
                "http://127.0.0.1:5/bigbluebutton/api/join?meetingID=m&checksum=abc".into(),
            ),
            body: bytes::Bytes::new(),
        };
        let Got::Wrong(text) = Got::of_wrong(&answer) else {
            panic!("not a BBB failure");
        };
        assert!(
            text.contains("302 to http://127.0.0.1:5/bigbluebutton/api/join,"),
            "{text}"
        );
        assert!(!text.contains("checksum"), "{text}");
        let failed = Answer {
            status: 200,
            location: None,
            body: bytes::Bytes::from_static(b"<response><returncode>FAILED</returncode><messageKey>notFound</messageKey><message>gone</message></response>"),
        };
        assert_eq!(
            Got::of_wrong(&failed),
            Got::Failed {
                key: "notFound".into(),
                message: "gone".into()
            }
        );
    }

    #[test]
    fn wrong_answers_and_silence_are_never_expected() {
        let flaps = [flap()];
        let mut f = failure(30.0, Some(3), "", "");
        f.got = Got::Wrong("500".into());
        assert_eq!(judged(&flaps, &f), Class::Unexpected);
        f.got = Got::NoAnswer("timed out".into());
        assert_eq!(judged(&flaps, &f), Class::Unexpected);
    }
}
