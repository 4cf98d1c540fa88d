//! Container log lines: CRI (`<RFC3339Nano> <stdout|stderr> <P|F> <message>`, written by
//! containerd and CRI-O) and Docker json-file (`{"log":..,"stream":..,"time":..}`), detected
//! per line as the collector's `container` operator does, and the joiner that reassembles
//! CRI partial lines (`P` … `F`) per stream, so interleaved stdout and stderr partials of one
//! file are never glued together. Nothing here panics on any input.

use super::config::ContainerFormat;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A value of an extra field of a Docker line (kept as a log attribute, as the collector does).
#[derive(Clone, Debug, PartialEq)]
pub enum Extra {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Objects and arrays, as JSON text.
    Json(String),
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub stream: Stream,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub message: String,
    /// CRI's tag (`P`, `F`, …); `None` for Docker lines.
    pub logtag: Option<String>,
    pub extra: Vec<(String, Extra)>,
}

impl Entry {
    /// CRI: anything but a final tag continues on the next line of the same stream.
    pub fn is_partial(&self) -> bool {
        self.logtag
            .as_deref()
            .is_some_and(|t| t.split(':').next() != Some("F"))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    Entry(Entry),
    /// Not a container log line: passed on as its text (invalid UTF-8 replaced).
    Broken(String),
}

/// The bytes as text, invalid UTF-8 replaced as `String::from_utf8_lossy` does; valid text
/// (nearly every line) is checked by the faster `str::from_utf8` and borrowed.
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Parses one line (without its newline). With `format` set, only that format is tried.
pub fn parse_line(line: &[u8], format: Option<ContainerFormat>) -> Parsed {
    let parsed = match format {
        Some(ContainerFormat::Docker) => parse_docker(line),
        Some(ContainerFormat::Crio) | Some(ContainerFormat::Containerd) => parse_cri(line),
        None if line.first() == Some(&b'{') => parse_docker(line),
        None => parse_cri(line),
    };
    parsed.unwrap_or_else(|| Parsed::Broken(text(line).into_owned()))
}

fn parse_cri(line: &[u8]) -> Option<Parsed> {
    let sp = line.iter().position(|&c| c == b' ')?;
    let time_ns = parse_rfc3339(line.get(..sp)?)?;
    let rest = line.get(sp + 1..)?;
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else {
        return None;
    };
    let tag_end = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
    let tag = text(rest.get(..tag_end)?).into_owned();
    let message = rest.get(tag_end + 1..).unwrap_or_default();
    Some(Parsed::Entry(Entry {
        stream,
        time_ns,
        message: text(message).into_owned(),
        logtag: Some(tag),
        extra: Vec::new(),
    }))
}

fn parse_docker(line: &[u8]) -> Option<Parsed> {
    let value: serde_json::Value = serde_json::from_str(&text(line)).ok()?;
    let serde_json::Value::Object(map) = value else {
        return None;
    };
    let mut message = None;
    let mut stream = None;
    let mut time_ns = None;
    let mut extra = Vec::new();
    for (key, v) in map {
        match (key.as_str(), v) {
            ("log", serde_json::Value::String(s)) => message = Some(s),
            ("stream", serde_json::Value::String(s)) if s == "stdout" => {
                stream = Some(Stream::Stdout)
            }
            ("stream", serde_json::Value::String(s)) if s == "stderr" => {
                stream = Some(Stream::Stderr)
            }
            ("time", serde_json::Value::String(s)) => time_ns = Some(parse_rfc3339(s.as_bytes())?),
            (_, v) => extra.push((key, extra_of(v))),
        }
    }
    Some(Parsed::Entry(Entry {
        stream: stream?,
        time_ns: time_ns?,
        message: message?,
        logtag: None,
        extra,
    }))
}

fn extra_of(v: serde_json::Value) -> Extra {
    match v {
        serde_json::Value::String(s) => Extra::Str(s),
        serde_json::Value::Bool(b) => Extra::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Extra::Int(i),
            None => Extra::Double(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::Null => Extra::Str(String::new()),
        other => Extra::Json(other.to_string()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to nanoseconds since the epoch; `None` for
/// anything else or a time before 1970.
pub fn parse_rfc3339(s: &[u8]) -> Option<u64> {
    fn num(s: &[u8], from: usize, len: usize) -> Option<i64> {
        let digits = s.get(from..from + len)?;
        let mut v = 0i64;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
        }
        Some(v)
    }
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(s, 0, 4)?, num(s, 5, 2)?, num(s, 8, 2)?);
    let (hour, min, sec) = (num(s, 11, 2)?, num(s, 14, 2)?, num(s, 17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match s.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if s.len() == i + 6 && s[i + 3] == b':' => {
            let (h, m) = (num(s, i + 1, 2)?, num(s, i + 4, 2)?);
            let v = h * 3600 + m * 60;
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(total).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A CRI line held until its stream's final part arrives.
#[derive(Debug)]
struct Pending {
    message: String,
    stream: Stream,
    time_ns: u64,
    /// Offset of the first line of this message in its file (for checkpoints).
    start_offset: u64,
}

/// What the joiner hands on.
#[derive(Debug, PartialEq)]
pub struct Joined {
    pub entry: Entry,
    /// Emitted because the joined message reached the size limit (more parts follow).
    pub split: bool,
}

/// Reassembles CRI partial lines of one file, separately for stdout and stderr.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: [Option<Pending>; 2],
}

impl Joiner {
    /// Feeds one entry starting at `offset`; returns the records it completes.
    pub fn push(&mut self, entry: Entry, offset: u64, max_size: usize, out: &mut Vec<Joined>) {
        let slot = &mut self.pending[entry.stream as usize];
        let partial = entry.is_partial();
        if let Some(p) = slot
            && p.message.len() + entry.message.len() > max_size
        {
            let p = slot.take();
            if let Some(p) = p {
                out.push(Joined {
                    entry: Entry {
                        message: p.message,
                        time_ns: p.time_ns,
                        logtag: Some("P".into()),
                        ..entry.clone()
                    },
                    split: true,
                });
            }
        }
        if !partial && slot.is_none() {
            out.push(Joined {
                entry,
                split: false,
            });
            return;
        }
        let p = slot.get_or_insert_with(|| Pending {
            message: String::new(),
            stream: entry.stream,
            time_ns: entry.time_ns,
            start_offset: offset,
        });
        p.message.push_str(&entry.message);
        if !partial && let Some(p) = slot.take() {
            // As the collector: the joined record keeps the first part's time and tag.
            out.push(Joined {
                entry: Entry {
                    message: p.message,
                    time_ns: p.time_ns,
                    logtag: Some("P".into()),
                    ..entry
                },
                split: false,
            });
        }
    }

    /// The file offset of the oldest line still held, if any.
    pub fn held_from(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|p| p.start_offset).min()
    }

    /// Hands on whatever is held (the file ended inside a partial message).
    pub fn drain(&mut self) -> Vec<Entry> {
        self.pending
            .iter_mut()
            .filter_map(Option::take)
            .map(|p| Entry {
                stream: p.stream,
                time_ns: p.time_ns,
                message: p.message,
                logtag: Some("P".into()),
                extra: Vec::new(),
            })
            .collect()
    }

    /// Bytes of message held.
    pub fn held_bytes(&self) -> usize {
        self.pending.iter().flatten().map(|p| p.message.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(line: &str) -> Entry {
        match parse_line(line.as_bytes(), None) {
            Parsed::Entry(e) => e,
            Parsed::Broken(b) => panic!("not parsed: {b}"),
        }
    }

    #[test]
    fn parses_containerd_and_crio_lines() {
        let e = entry("2023-06-22T10:27:25.813799277Z stdout F standalone containerd line");
        assert_eq!(e.stream, Stream::Stdout);
        assert_eq!(e.message, "standalone containerd line");
        assert_eq!(e.logtag.as_deref(), Some("F"));
        assert_eq!(e.time_ns, 1_687_429_645_813_799_277);
        let e = entry("2024-04-13T07:59:37.505201169-05:00 stderr P crio part");
        assert_eq!(e.stream, Stream::Stderr);
        assert!(e.is_partial());
        assert_eq!(e.time_ns, 1_713_013_177_505_201_169);
        // An empty message.
        let e = entry("2023-06-22T10:27:25Z stdout F");
        assert_eq!(e.message, "");
        assert_eq!(e.time_ns, 1_687_429_645_000_000_000);
    }

    #[test]
    fn parses_docker_lines() {
        let e = entry(
            r#"{"log":"INFO: log line here\n","stream":"stderr","time":"2024-03-30T08:31:20.545192187Z","attrs":{"a":"b"}}"#,
        );
        assert_eq!(e.message, "INFO: log line here\n");
        assert_eq!(e.stream, Stream::Stderr);
        assert_eq!(e.time_ns, 1_711_787_480_545_192_187);
        assert_eq!(e.logtag, None);
        assert_eq!(
            e.extra,
            vec![("attrs".into(), Extra::Json(r#"{"a":"b"}"#.into()))]
        );
    }

    #[test]
    fn broken_lines_pass_through() {
        for line in [
            &b"just text"[..],
            b"2023-06-22T10:27:25Z stdin F x",
            b"{\"log\":\"no stream\"}",
            b"{not json",
            b"2023-13-22T10:27:25Z stdout F bad month",
        ] {
            assert!(
                matches!(parse_line(line, None), Parsed::Broken(_)),
                "{line:?}"
            );
        }
        assert_eq!(
            parse_line(b"caf\xff", None),
            Parsed::Broken("caf\u{fffd}".into())
        );
    }

    #[test]
    fn joins_partials_per_stream() {
        let mut j = Joiner::default();
        let mut out = Vec::new();
        let lines = [
            "2023-06-22T10:27:25Z stdout P out-a ",
            "2023-06-22T10:27:25Z stderr P err-a ",
            "2023-06-22T10:27:26Z stdout F out-b",
            "2023-06-22T10:27:27Z stderr F err-b",
        ];
        for (i, l) in lines.iter().enumerate() {
            j.push(entry(l), i as u64 * 100, 1 << 20, &mut out);
            if i == 1 {
                assert_eq!(j.held_from(), Some(0));
            }
        }
        let got: Vec<(&str, Stream, u64)> = out
            .iter()
            .map(|r| (r.entry.message.as_str(), r.entry.stream, r.entry.time_ns))
            .collect();
        assert_eq!(
            got,
            vec![
                ("out-a out-b", Stream::Stdout, 1_687_429_645_000_000_000),
                ("err-a err-b", Stream::Stderr, 1_687_429_645_000_000_000),
            ]
        );
        assert_eq!(j.held_from(), None);
    }

    #[test]
    fn splits_at_the_size_limit() {
        let mut j = Joiner::default();
        let mut out = Vec::new();
        for _ in 0..5 {
            j.push(
                entry("2023-06-22T10:27:25Z stdout P 0123456789"),
                0,
                25,
                &mut out,
            );
        }
        j.push(entry("2023-06-22T10:27:25Z stdout F end"), 0, 25, &mut out);
        let got: Vec<(usize, bool)> = out
            .iter()
            .map(|r| (r.entry.message.len(), r.split))
            .collect();
        assert_eq!(got, vec![(20, true), (20, true), (13, false)]);
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_line(&line, None);
            let _ = parse_line(&line, Some(ContainerFormat::Docker));
            let _ = parse_line(&line, Some(ContainerFormat::Crio));
        }

        #[test]
        fn cri_shaped_lines_never_panic(
            time in "[0-9T:Z.+-]{0,40}",
            stream in "(stdout|stderr|x)",
            tag in "[PF:x]{0,3}",
            msg in ".{0,40}",
        ) {
            let _ = parse_line(format!("{time} {stream} {tag} {msg}").as_bytes(), None);
        }

        /// Every stream's message comes out whole and in order, whatever the interleaving.
        #[test]
        fn reassembles_each_stream(parts in proptest::collection::vec((any::<bool>(), "[a-z]{0,5}", any::<bool>()), 0..40)) {
            let mut j = Joiner::default();
            let mut out = Vec::new();
            let mut expect: [Vec<String>; 2] = Default::default();
            let mut current: [String; 2] = Default::default();
            for (i, (stderr, text, last)) in parts.iter().enumerate() {
                let stream = if *stderr { "stderr" } else { "stdout" };
                let tag = if *last { "F" } else { "P" };
                let line = format!("2023-06-22T10:27:25Z {stream} {tag} {text}");
                j.push(entry(&line), i as u64, usize::MAX, &mut out);
                current[*stderr as usize].push_str(text);
                if *last {
                    expect[*stderr as usize].push(std::mem::take(&mut current[*stderr as usize]));
                }
            }
            for (s, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                let got: Vec<String> = out.iter().filter(|r| r.entry.stream == stream).map(|r| r.entry.message.clone()).collect();
                prop_assert_eq!(&got, &expect[s]);
            }
        }
    }
}
