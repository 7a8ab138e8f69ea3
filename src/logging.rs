//! Log output: where lines go (stderr, for journald or a container runtime)
//! and how a text line is written.
//!
//! The text format is tracing-subscriber's own (`2026-11-26T14:00:45.462750Z
//!  INFO request call="join" …`, no colours unless stderr is a terminal), but
//! written by [`TextLine`]: tinyscale logs one line per request, and the
//! stock formatter was a large part of a call's cost (see
//! docs/PERFORMANCE.md). JSON lines are left to tracing-subscriber. Does not
//! decide *what* is logged (each module does; `server` writes the request
//! line).

use crate::config::LogFormat;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Logs to stderr, filtered by `filter` (e.g. `info`, `tinyscale=debug`):
/// human-readable lines, or one JSON object per line for log shippers.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            builder.with_ansi(true).try_init()
        }
        LogFormat::Text => builder.event_format(TextLine).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// tracing-subscriber's full text format without colours or targets, written
/// directly: the same bytes, a fraction of the work.
pub struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(160);
        push_timestamp(&mut line, std::time::SystemTime::now());
        line.push_str(match *event.metadata().level() {
            Level::ERROR => " ERROR ",
            Level::WARN => "  WARN ",
            Level::INFO => "  INFO ",
            Level::DEBUG => " DEBUG ",
            Level::TRACE => " TRACE ",
        });
        // Spans, as the stock format shows them (tinyscale opens none of
        // its own; a library's would appear here).
        if let Some(scope) = ctx.event_scope() {
            let mut any = false;
            for span in scope.from_root() {
                line.push_str(span.name());
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    let _ = write!(line, "{{{fields}}}");
                }
                line.push(':');
                any = true;
            }
            if any {
                line.push(' ');
            }
        }
        let mut fields = Fields {
            line: &mut line,
            first: true,
            sanitize: writer.sanitizes_ansi_escapes(),
        };
        event.record(&mut fields);
        line.push('\n');
        writer.write_str(&line)
    }
}

/// Writes fields as tracing-subscriber's default visitor does: the message
/// bare, the others `name=value` with strings quoted and escaped (so a
/// meetingID cannot forge a log line), separated by single spaces.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    /// Escape terminal control characters in the message, as the stock
    /// formatter does (on by default): a message can carry text from
    /// outside, such as a server's error.
    sanitize: bool,
}

impl Fields<'_> {
    fn pad(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.line.push(' ');
        }
    }

    fn name(&mut self, field: &Field) {
        self.pad();
        self.line.push_str(field.name());
        self.line.push('=');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.record_debug(field, &value);
        }
        self.name(field);
        // Plain printable ASCII needs no escaping: Debug's output is the
        // same text in quotes. Anything else goes through Debug itself.
        if value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
        } else {
            let _ = write!(self.line, "{value:?}");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.pad();
            let start = self.line.len();
            let _ = write!(self.line, "{value:?}");
            if self.sanitize {
                escape_controls(self.line, start);
            }
        } else {
            self.name(field);
            let _ = write!(self.line, "{value:?}");
        }
    }
}

/// Escapes, in `line[start..]`, the characters tracing-subscriber's
/// message sanitizing escapes (ESC, BEL, BS, FF, DEL and the C1 controls),
/// the same way. The usual message has none: then nothing is copied.
fn escape_controls(line: &mut String, start: usize) {
    let is_control = |c: char| {
        matches!(
            c,
            '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
        )
    };
    if !line[start..].contains(is_control) {
        return;
    }
    let message = line.split_off(start);
    for c in message.chars() {
        match c {
            '\x1b' => line.push_str("\\x1b"),
            '\x07' => line.push_str("\\x07"),
            '\x08' => line.push_str("\\x08"),
            '\x0c' => line.push_str("\\x0c"),
            '\x7f' => line.push_str("\\x7f"),
            c if is_control(c) => {
                let _ = write!(line, "\\u{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
}

/// `2026-11-26T14:00:45.462750Z`: UTC, microseconds, as tracing-subscriber
/// writes it.
fn push_timestamp(out: &mut String, now: std::time::SystemTime) {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let mut digits = |n: u64, width: usize, after: char| {
        let mut buf = [b'0'; 20];
        let mut n = n;
        for slot in buf[..width].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.push_str(std::str::from_utf8(&buf[..width]).expect("digits"));
        out.push(after);
    };
    digits(year as u64, 4, '-');
    digits(month as u64, 2, '-');
    digits(day as u64, 2, 'T');
    digits(of_day / 3600, 2, ':');
    digits(of_day / 60 % 60, 2, ':');
    digits(of_day % 60, 2, '.');
    digits(u64::from(since.subsec_micros()), 6, 'Z');
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        let at = |secs: u64, micros: u32| {
            let mut s = String::new();
            push_timestamp(
                &mut s,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into()),
            );
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_795_705_245, 462_750), "2026-11-26T15:00:45.462750Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    }

    /// A writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn events() {
        let ms = 1.25f64;
        tracing::info!(
            call = "join",
            meeting = "a \"quoted\" ü\nid",
            server = "http://127.0.0.1:1",
            result = "SUCCESS",
            ms = format_args!("{ms:.1}"),
            "request"
        );
        tracing::warn!(server = "x", "meeting search: server {} failed", 3);
        tracing::error!(n = 5u64, ok = true, "plain");
        tracing::debug!("only a message");
        tracing::warn!(
            bad = "esc \x1b[31m",
            "server said \x1b[31mred\x07\x08\x0c\x7f\u{85} {}",
            "end"
        );
        let span = tracing::info_span!("outer", id = 7);
        let _entered = span.enter();
        tracing::info!(k = "v", "inside a span");
    }

    /// The same events through the stock formatter and through TextLine
    /// give the same lines, but for the time.
    #[test]
    fn same_lines_as_tracing_subscriber() {
        let run = |ours: bool| {
            let kept = Kept::default();
            let writer = kept.clone();
            let builder = tracing_subscriber::fmt()
                .with_max_level(Level::DEBUG)
                .with_ansi(false)
                .with_target(false)
                .with_writer(move || writer.clone());
            if ours {
                tracing::subscriber::with_default(builder.event_format(TextLine).finish(), events);
            } else {
                tracing::subscriber::with_default(builder.finish(), events);
            }
            let text = String::from_utf8(kept.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| l.split_once(' ').unwrap().1.to_string())
                .collect::<Vec<_>>()
        };
        let (stock, ours) = (run(false), run(true));
        assert_eq!(stock.len(), 6);
        assert!(stock[4].contains("\\x1b[31mred\\x07"), "{}", stock[4]);
        assert_eq!(stock, ours);
    }
}
