//! Log output for a server under load: lines are gathered in memory and
//! written by one thread, a whole batch per `write`.
//!
//! A server logs a line per request. Written straight to stdout, each line
//! is a `write` system call made on the thread that served the request, and
//! at ten thousand requests a second those calls (and the preemptions they
//! invite) cost a server several percent of its CPU. [`BatchedWriter`] takes
//! a line into a buffer under a mutex instead; a writer thread wakes for the
//! first line after a quiet spell and writes it at once, then writes what
//! gathered in the meantime at most every [`BatchedWriter::LINGER`]. Under
//! load that is one `write` per few hundred lines; when idle, a line is
//! written as soon as it is logged.
//!
//! Nothing is dropped: past [`BatchedWriter::MAX_PENDING`] bytes not yet
//! written (stdout blocked by a slow reader), loggers wait for the writer,
//! as they would on a blocking `write`. Lines are whole: each `write` call
//! of a logger (the fmt layer makes one per event) lands in the buffer in
//! one piece. [`BatchedWriter::flush`] writes what is pending on the
//! caller's thread (the panic hook calls it), and [`FlushOnDrop`] flushes
//! and stops the writer thread when `main` returns.
//!
//! Lambda does not use it: a Lambda container is frozen between
//! invocations, so its lines are written before the invocation ends, and it
//! serves one request at a time anyway.
//!
//! [`JsonLines`] formats each event as one JSON object, the fields at the top
//! level: what `tracing_subscriber`'s JSON format writes with
//! `flatten_event(true)` and no spans, without its `serde` map and its
//! allocations per line.

use std::fmt::{self as fmt, Write as _};
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// A `MakeWriter` for `tracing_subscriber::fmt` (and an `io::Write` for
/// anything else) that batches lines; see the module docs. Clones share one
/// buffer and one writer thread.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The writer thread waits on it for a first line (or the end).
    filled: Condvar,
    /// Loggers wait on it while `MAX_PENDING` bytes are not yet written.
    drained: Condvar,
    /// The output. Taken before `pending` by whoever writes, so batches
    /// are written in the order they were gathered.
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    writer_idle: bool,
    loggers_waiting: usize,
    closed: bool,
}

impl BatchedWriter {
    /// How long the writer thread lets lines gather after a write.
    pub const LINGER: Duration = Duration::from_millis(5);
    /// Bytes gathered before loggers wait for the writer.
    pub const MAX_PENDING: usize = 4 << 20;

    /// Starts the writer thread, writing to `out`. Keep the guard alive
    /// until the end of `main`: dropping it writes what is left.
    pub fn spawn(out: impl Write + Send + 'static) -> io::Result<(Self, FlushOnDrop)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            filled: Condvar::new(),
            drained: Condvar::new(),
            out: Mutex::new(Box::new(out)),
        });
        let thread = std::thread::Builder::new()
            .name("wasmgate-log".into())
            .spawn({
                let shared = shared.clone();
                move || shared.run()
            })?;
        let writer = BatchedWriter { shared };
        let guard = FlushOnDrop {
            writer: writer.clone(),
            thread: Some(thread),
        };
        Ok((writer, guard))
    }

    /// Writes everything logged so far, on this thread.
    pub fn flush(&self) -> io::Result<()> {
        self.shared.write_pending(&mut Vec::new())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A logger that panicked mid-append left whole lines (the append
        // is one `extend`): the buffer is still good.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.lines.len() >= BatchedWriter::MAX_PENDING && !pending.closed {
            pending.loggers_waiting += 1;
            pending = self
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
            pending.loggers_waiting -= 1;
        }
        pending.lines.extend_from_slice(line);
        if pending.writer_idle {
            pending.writer_idle = false;
            self.filled.notify_one();
        }
    }

    /// Takes the pending lines and writes them. `batch` is a spare buffer
    /// (swapped with the pending one, so neither is reallocated per batch).
    fn write_pending(&self, batch: &mut Vec<u8>) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut pending = self.lock();
            std::mem::swap(&mut pending.lines, batch);
            if pending.loggers_waiting > 0 {
                self.drained.notify_all();
            }
        }
        let written = if batch.is_empty() {
            Ok(())
        } else {
            out.write_all(batch)
        };
        batch.clear();
        written.and_then(|()| out.flush())
    }

    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut pending = self.lock();
                while pending.lines.is_empty() && !pending.closed {
                    pending.writer_idle = true;
                    pending = self
                        .filled
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if pending.closed && pending.lines.is_empty() {
                    return;
                }
            }
            // Nowhere to report a failed write of the log (stdout closed);
            // the lines are dropped rather than kept growing.
            let _ = self.write_pending(&mut batch);
            std::thread::sleep(BatchedWriter::LINGER);
        }
    }
}

impl Write for &BatchedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Lines reach the output in batches; `BatchedWriter::flush` forces one.
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter {
    type Writer = &'a BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Writes what is pending and stops the writer thread when dropped.
pub struct FlushOnDrop {
    writer: BatchedWriter,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let shared = &self.writer.shared;
        {
            let mut pending = shared.lock();
            pending.closed = true;
            shared.filled.notify_one();
            shared.drained.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = self.writer.flush();
    }
}

/// An event as one line of JSON, its fields at the top level:
///
/// ```text
/// {"timestamp":"2026-11-22T07:50:32.036170Z","level":"INFO","message":"request","status":200,…,"target":"wasmgate::request"}
/// ```
///
/// The same object `tracing_subscriber::fmt().json().flatten_event(true)`
/// writes without span fields (a test holds the two equal), written
/// straight into the line buffer: no `serde` map, no timestamp string, no
/// `format!` per `Debug` field. Numbers are JSON numbers (non-finite floats
/// `null`), `Display`/`Debug` fields strings; events of the `log` crate get
/// their own target, as there.
pub struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        use tracing_log::NormalizeEvent as _;
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = JsonFieldsVisitor {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes `,"name":value` per field.
struct JsonFieldsVisitor<'w, W: fmt::Write> {
    out: &'w mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFieldsVisitor<'_, W> {
    fn field(&mut self, field: &tracing::field::Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_char(',')?;
                write_json_str(self.out, field.name())?;
                self.out.write_char(':')?;
                value(self.out)
            })();
        }
    }
}

impl<W: fmt::Write> tracing::field::Visit for JsonFieldsVisitor<'_, W> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.field(field, |out| write_json_str(out, value));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(JsonEscaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.field(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.field(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.field(field, |out| {
            // serde_json's own digits (`null` when not finite), into a
            // buffer on the stack: the longest is 24 bytes.
            let mut digits = [0u8; 32];
            let mut cursor = &mut digits[..];
            serde_json::to_writer(&mut cursor, &value).map_err(|_| fmt::Error)?;
            let len = 32 - cursor.len();
            out.write_str(std::str::from_utf8(&digits[..len]).map_err(|_| fmt::Error)?)
        });
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.field(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }
}

/// A `fmt::Write` that escapes what goes through it for a JSON string.
struct JsonEscaped<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_json_str_contents(self.0, s)
    }
}

fn write_json_str(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    write_json_str_contents(out, s)?;
    out.write_char('"')
}

/// `s` escaped for the inside of a JSON string (RFC 8259: `"`, `\` and
/// the control characters; the rest as is, UTF-8).
fn write_json_str_contents(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Only ASCII bytes end a run, so the slices are on char boundaries.
        out.write_str(&s[start..i])?;
        if escape.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escape)?;
        }
        start = i + 1;
    }
    out.write_str(&s[start..])
}

/// RFC 3339 in UTC with microseconds, as `2026-11-22T07:50:32.036170Z`.
fn write_timestamp(out: &mut impl fmt::Write, now: std::time::SystemTime) -> fmt::Result {
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        since_epoch.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
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
    use std::time::Instant;

    /// An output that records each `write` call.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        /// While held, writes block (a stdout nobody reads).
        gate: Arc<Mutex<()>>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _gate = self.gate.lock().unwrap();
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.writes.lock().unwrap().concat()).unwrap()
        }
        fn write_calls(&self) -> usize {
            self.writes.lock().unwrap().len()
        }
    }

    fn log(writer: &BatchedWriter, line: &str) {
        let mut w = writer;
        w.write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn a_line_after_a_quiet_spell_is_written_at_once() {
        let out = Recorder::default();
        let (writer, _guard) = BatchedWriter::spawn(out.clone()).unwrap();
        log(&writer, "first\n");
        let started = Instant::now();
        while out.text() != "first\n" {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the line was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn many_threads_lines_arrive_whole_and_in_few_writes() {
        let out = Recorder::default();
        let (writer, guard) = BatchedWriter::spawn(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        log(
                            &writer,
                            &format!("thread {t} line {i} {}\n", "x".repeat(40)),
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|rest| {
                    let (i, pad) = rest.split_once(' ').expect("a torn line");
                    assert_eq!(pad, "x".repeat(40), "a torn line");
                    i.parse().unwrap()
                })
                .collect();
            assert_eq!(mine, (0..5_000).collect::<Vec<_>>(), "thread {t}'s lines");
        }
        assert!(
            out.write_calls() < 20_000 / 10,
            "{} writes for 20,000 lines: not batched",
            out.write_calls()
        );
    }

    #[test]
    fn flush_writes_everything_logged_so_far() {
        let out = Recorder::default();
        let (writer, _guard) = BatchedWriter::spawn(out.clone()).unwrap();
        for i in 0..100 {
            log(&writer, &format!("{i}\n"));
        }
        writer.flush().unwrap();
        let expected: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(out.text(), expected);
    }

    #[test]
    fn loggers_wait_for_a_blocked_output_instead_of_dropping_lines() {
        let out = Recorder::default();
        let gate = out.gate.lock().unwrap();
        let (writer, guard) = BatchedWriter::spawn(out.clone()).unwrap();
        let line = format!("{}\n", "y".repeat(1023));
        let lines = 3 * BatchedWriter::MAX_PENDING / line.len();
        let logger = std::thread::spawn({
            let writer = writer.clone();
            let line = line.clone();
            move || {
                for _ in 0..lines {
                    log(&writer, &line);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!logger.is_finished(), "the logger never waited");
        let buffered = writer.shared.lock().lines.len();
        assert!(
            buffered <= BatchedWriter::MAX_PENDING + line.len(),
            "{buffered} bytes pending"
        );
        drop(gate);
        logger.join().unwrap();
        drop(guard);
        assert_eq!(out.text().len(), lines * line.len());
    }

    /// Lines of the events `emit` logs, formatted by the subscriber `make`
    /// builds over a writer into the returned buffer.
    fn lines_of(json: bool, emit: fn()) -> Vec<String> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let make_writer = {
            let out = out.clone();
            move || SharedBuf(out.clone())
        };
        let builder = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(make_writer);
        if json {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            let subscriber = builder.event_format(JsonLines).finish();
            tracing::subscriber::with_default(subscriber, emit);
        }
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn events() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Thing {
            name: &'static str,
            list: Vec<u8>,
        }
        let method = http::Method::GET;
        tracing::info!(
            target: "wasmgate::request",
            request_id = %"0123abcd",
            method = %method,
            path = %"/he\"llo\n\\ \u{1}\u{1f} é ✓",
            route = "/hello",
            version = Some(3u64),
            missing = None::<u64>,
            status = 200u16,
            duration_ms = 0.086923,
            "request"
        );
        tracing::warn!(error = %"a\tb\u{8}\u{c}\r", thing = ?Thing { name: "q\"x", list: vec![1, 2] }, "request failed");
        tracing::error!(
            negative = -42i64,
            big = u64::MAX,
            wide = 1u128 << 100,
            yes = true,
            no = false,
            nan = f64::NAN,
            inf = f64::INFINITY,
            tiny = 1e-7,
            whole = 1.0,
            huge = 1e300,
            "numbers"
        );
        tracing::debug!("formatted {} and {:?}", 5, "five");
        tracing::trace!(target: "weird \"target\"", empty = "", "");
    }

    /// The timestamp's value, replaced by a placeholder.
    fn without_timestamp(line: &str) -> (String, String) {
        let prefix = "{\"timestamp\":\"";
        assert!(line.starts_with(prefix), "{line}");
        let end = prefix.len() + line[prefix.len()..].find('"').unwrap();
        (
            format!("{prefix}T{}", &line[end..]),
            line[prefix.len()..end].to_string(),
        )
    }

    #[test]
    fn json_lines_are_what_the_tracing_json_format_writes() {
        let ours = lines_of(false, events);
        let theirs = lines_of(true, events);
        assert_eq!(ours.len(), 5, "{ours:#?}");
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            let (ours, our_time) = without_timestamp(ours);
            let (theirs, their_time) = without_timestamp(theirs);
            assert_eq!(ours, theirs);
            assert_eq!(
                our_time.len(),
                their_time.len(),
                "{our_time} vs {their_time}"
            );
            // The same second, or the next one.
            assert!(
                their_time[..19] >= our_time[..19],
                "{our_time} vs {their_time}"
            );
            let line: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert!(line.is_object());
        }
        // The JSON is what a reader gets back as values.
        let request: serde_json::Value = serde_json::from_str(&ours[0]).unwrap();
        assert_eq!(request["path"], "/he\"llo\n\\ \u{1}\u{1f} é ✓");
        assert_eq!(request["status"], 200);
        assert_eq!(request["version"], 3);
        assert!(request.get("missing").is_none());
        assert_eq!(request["target"], "wasmgate::request");
        let numbers: serde_json::Value = serde_json::from_str(&ours[2]).unwrap();
        assert_eq!(numbers["nan"], serde_json::Value::Null);
        assert_eq!(numbers["tiny"], 1e-7);
        assert_eq!(numbers["big"], u64::MAX);
        assert_eq!(numbers["wide"], (1u128 << 100).to_string());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |secs: u64, micros: u32| {
            let mut out = String::new();
            let time = std::time::UNIX_EPOCH + Duration::new(secs, micros * 1000);
            write_timestamp(&mut out, time).unwrap();
            out
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(1_795_333_832, 36_170), "2026-11-22T07:50:32.036170Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }
}
