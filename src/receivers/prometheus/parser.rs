//! Prometheus text format 0.0.4 and OpenMetrics 1.0 text parsing. Names and unescaped label
//! values borrow from the scraped body; only values with escapes allocate.

use std::borrow::Cow;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: millisecond integer timestamps.
    Text,
    /// `application/openmetrics-text`: second timestamps, `# UNIT`, `# EOF`, exemplars.
    OpenMetrics,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    fn parse(s: &str) -> Option<MetricType> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "unknown" | "untyped" => MetricType::Unknown,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }

    /// The sample-name suffixes a family of this type owns besides its bare name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricType::Summary => &["_sum", "_count", "_created"],
            MetricType::Info => &["_info"],
            _ => &[],
        }
    }
}

/// A metric family: the metadata of `# TYPE`/`# HELP`/`# UNIT`, or an implicit untyped
/// family for samples without metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Family<'a> {
    pub name: &'a str,
    pub kind: MetricType,
    pub help: Option<Cow<'a, str>>,
    pub unit: Option<&'a str>,
}

impl Family<'_> {
    /// Whether a sample called `name` belongs to this family.
    pub fn owns(&self, name: &str) -> bool {
        match name.strip_prefix(self.name) {
            Some("") => true,
            Some(suffix) => self.kind.suffixes().contains(&suffix),
            None => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sample<'a> {
    /// Index into `Exposition::families`.
    pub family: usize,
    pub name: &'a str,
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl PartialEq for Sample<'_> {
    /// Values compare by bits so that NaN samples (staleness markers) round-trip.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.labels == other.labels
            && self.value.to_bits() == other.value.to_bits()
            && self.timestamp_ms == other.timestamp_ms
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition<'a> {
    pub families: Vec<Family<'a>>,
    pub samples: Vec<Sample<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole exposition. Any malformed line fails the whole body, as in Prometheus.
pub fn parse(text: &str, format: Format) -> Result<Exposition<'_>, ParseError> {
    let mut samples = Vec::new();
    let families = parse_each(text, format, |_, sample| {
        samples.push(sample.clone());
        Ok::<(), ParseError>(())
    })?;
    Ok(Exposition { families, samples })
}

/// Parses a body line by line, handing each sample to `each` as it is read, with the
/// families met so far (a sample's `family` indexes them), so that nothing of the body but
/// its families is held at once. Returns the families. Metadata applies to the samples that
/// follow it. A malformed line stops the parse with its error (samples before it have been
/// handed over); an error of `each` stops it too.
pub fn parse_each<'a, E: From<ParseError>>(
    text: &'a str,
    format: Format,
    mut each: impl FnMut(&[Family<'a>], &Sample<'a>) -> Result<(), E>,
) -> Result<Vec<Family<'a>>, E> {
    let mut parser = Parser {
        format,
        families: Vec::new(),
        current: None,
    };
    let mut labels = Vec::new();
    let mut saw_eof = false;
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let err = |message: String| ParseError {
            line: n + 1,
            message,
        };
        if saw_eof {
            if line.is_empty() {
                continue;
            }
            return Err(err("content after `# EOF`".into()).into());
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if format == Format::OpenMetrics && comment == " EOF" {
                saw_eof = true;
                continue;
            }
            parser.comment(comment).map_err(err)?;
        } else {
            labels.clear();
            let sample = parser.sample(line, labels).map_err(err)?;
            each(&parser.families, &sample)?;
            labels = sample.labels;
        }
    }
    if format == Format::OpenMetrics && !saw_eof {
        return Err(ParseError {
            line: text.split('\n').count(),
            message: "OpenMetrics body does not end with `# EOF`".into(),
        }
        .into());
    }
    Ok(parser.families)
}

struct Parser<'a> {
    format: Format,
    families: Vec<Family<'a>>,
    current: Option<usize>,
}

impl<'a> Parser<'a> {
    fn comment(&mut self, comment: &'a str) -> Result<(), String> {
        let rest = comment.trim_start_matches([' ', '\t']);
        let (keyword, rest) = split_token(rest);
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            return Ok(()); // a plain comment
        }
        let (name, rest) = split_token(rest);
        if name.is_empty() || !is_metric_name(name) {
            return Err(format!("invalid metric name `{name}` in # {keyword}"));
        }
        let index = self.family_named(name);
        let family = &mut self.families[index];
        match keyword {
            "HELP" => family.help = Some(unescape_help(rest)),
            "TYPE" => {
                let t = rest.trim_end_matches([' ', '\t']);
                family.kind =
                    MetricType::parse(t).ok_or_else(|| format!("unknown metric type `{t}`"))?;
            }
            _ => {
                let unit = rest.trim_end_matches([' ', '\t']);
                family.unit = (!unit.is_empty()).then_some(unit);
            }
        }
        Ok(())
    }

    /// The family declared by a metadata line: the current one when it has that name.
    fn family_named(&mut self, name: &'a str) -> usize {
        if let Some(i) = self.current
            && self.families[i].name == name
        {
            return i;
        }
        self.push_family(name)
    }

    fn push_family(&mut self, name: &'a str) -> usize {
        self.families.push(Family {
            name,
            kind: MetricType::Unknown,
            help: None,
            unit: None,
        });
        let i = self.families.len() - 1;
        self.current = Some(i);
        i
    }

    /// Reads a sample line; its labels go into `labels` (empty), which the sample returns.
    fn sample(
        &mut self,
        line: &'a str,
        mut labels: Vec<(&'a str, Cow<'a, str>)>,
    ) -> Result<Sample<'a>, String> {
        let name_len = line
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
            .unwrap_or(line.len());
        let name = &line[..name_len];
        if !is_metric_name(name) {
            return Err(format!("invalid metric name at `{}`", excerpt(line)));
        }
        let mut rest = &line[name_len..];
        if let Some(after) = skip_blank(rest).strip_prefix('{') {
            rest = parse_labels(after, &mut labels)?;
        }
        if !rest.starts_with([' ', '\t']) {
            return Err(format!(
                "expected a space before the value in `{}`",
                excerpt(line)
            ));
        }
        let (value_text, after) = split_token(skip_blank(rest));
        let value = parse_float(value_text)
            .ok_or_else(|| format!("invalid value `{}`", excerpt(value_text)))?;
        let (ts_text, after) = split_token(skip_blank(after));
        let mut trailing = skip_blank(after);
        let timestamp_ms = match ts_text {
            "" => None,
            "#" if self.format == Format::OpenMetrics => {
                trailing = ""; // an exemplar: ignored
                None
            }
            t => Some(match self.format {
                Format::Text => t
                    .parse::<i64>()
                    .map_err(|_| format!("invalid timestamp `{}`", excerpt(t)))?,
                Format::OpenMetrics => parse_om_timestamp(t)
                    .ok_or_else(|| format!("invalid timestamp `{}`", excerpt(t)))?,
            }),
        };
        let exemplar = self.format == Format::OpenMetrics && trailing.starts_with('#');
        if !trailing.is_empty() && !exemplar {
            return Err(format!(
                "unexpected `{}` after the sample",
                excerpt(trailing)
            ));
        }
        let family = match self.current {
            Some(i) if self.families[i].owns(name) => i,
            _ => self.push_family(name),
        };
        Ok(Sample {
            family,
            name,
            labels,
            value,
            timestamp_ms,
        })
    }
}

/// Parses `name="value", ...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Result<&'a str, String> {
    loop {
        rest = skip_blank(rest);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_len = rest
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err(format!("invalid label name at `{}`", excerpt(rest)));
        }
        rest = skip_blank(&rest[name_len..]);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected `=` after label `{name}`"))?;
        rest = skip_blank(rest);
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("expected `\"` to open the value of label `{name}`"))?;
        let (value, after) = label_value(rest)?;
        labels.push((name, value));
        rest = skip_blank(after);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected `,` or `}}` after label `{name}`"));
        }
    }
}

/// A quoted label value (after its opening quote): `\\`, `\"` and `\n` are the escapes.
fn label_value(s: &str) -> Result<(Cow<'_, str>, &str), String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Ok((Cow::Borrowed(&s[..i]), &s[i + 1..])),
            b'\\' => break,
            _ => i += 1,
        }
    }
    let mut owned = String::with_capacity(s.len().min(256));
    owned.push_str(&s[..i]);
    let mut chars = s[i..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((Cow::Owned(owned), &s[i + at + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => owned.push('\\'),
                Some((_, '"')) => owned.push('"'),
                Some((_, 'n')) => owned.push('\n'),
                Some((_, other)) => {
                    return Err(format!("invalid escape `\\{other}` in a label value"));
                }
                None => break,
            },
            c => owned.push(c),
        }
    }
    Err("unterminated label value".into())
}

fn unescape_help(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

fn skip_blank(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Splits off the first blank-separated token.
fn split_token(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn excerpt(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub fn is_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

pub fn is_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A sample value as Go's `strconv.ParseFloat` reads it (`NaN`, `+Inf`, `-Inf`, exponents).
pub fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.len() > 1024 {
        return None;
    }
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // One NaN, whatever its sign or spelling, so that values compare by bits.
    s.parse::<f64>()
        .ok()
        .map(|v| if v.is_nan() { f64::NAN } else { v })
}

/// OpenMetrics timestamps are seconds with an optional fraction; decimal ones convert to
/// milliseconds exactly (truncating below a millisecond), exponent forms through f64.
fn parse_om_timestamp(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
    {
        let secs: i64 = int.parse().ok()?;
        let mut ms = 0i64;
        for (i, b) in frac.bytes().take(3).enumerate() {
            ms += i64::from(b - b'0') * 10i64.pow(2 - i as u32);
        }
        let total = secs.checked_mul(1000)?.checked_add(ms)?;
        return Some(if negative { -total } else { total });
    }
    let secs = parse_float(s)?;
    if !secs.is_finite() || secs.abs() > 9.0e15 {
        return None;
    }
    Some((secs * 1000.0) as i64)
}

/// Renders an exposition back to text (used by tests and for the round-trip property).
pub fn render(exposition: &Exposition<'_>, format: Format) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut samples = exposition.samples.iter().peekable();
    for (index, family) in exposition.families.iter().enumerate() {
        if let Some(help) = &family.help {
            let escaped = help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {} {escaped}", family.name);
        }
        if family.kind != MetricType::Unknown || format == Format::OpenMetrics {
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        }
        if let Some(unit) = family.unit.filter(|_| format == Format::OpenMetrics) {
            let _ = writeln!(out, "# UNIT {} {unit}", family.name);
        }
        while let Some(sample) = samples.next_if(|s| s.family == index) {
            out.push_str(sample.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let escaped = value
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(out, "{name}=\"{escaped}\"");
                }
                out.push('}');
            }
            let _ = write!(out, " {}", format_float(sample.value));
            match (sample.timestamp_ms, format) {
                (None, _) => {}
                (Some(ts), Format::Text) => {
                    let _ = write!(out, " {ts}");
                }
                (Some(ts), Format::OpenMetrics) => {
                    let sign = if ts < 0 { "-" } else { "" };
                    let abs = ts.unsigned_abs();
                    let _ = write!(out, " {sign}{}.{:03}", abs / 1000, abs % 1000);
                }
            }
            out.push('\n');
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// A float as Prometheus writes it: `NaN`, `+Inf`, `-Inf`, else the shortest representation
/// that reads back exactly (with an exponent for very large or small magnitudes).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TEXT: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# Finally a summary, which has a complex representation, too:
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
"#;

    #[test]
    fn the_documented_text_example() {
        let e = parse(TEXT, Format::Text).unwrap();
        let names: Vec<_> = e.families.iter().map(|f| (f.name, f.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("http_requests_total", MetricType::Counter),
                ("msdos_file_access_time_seconds", MetricType::Unknown),
                ("metric_without_timestamp_and_labels", MetricType::Unknown),
                ("something_weird", MetricType::Unknown),
                ("http_request_duration_seconds", MetricType::Histogram),
                ("rpc_duration_seconds", MetricType::Summary),
            ]
        );
        assert_eq!(e.samples.len(), 14);
        assert_eq!(e.samples[1].value, 3.0);
        assert_eq!(e.samples[1].timestamp_ms, Some(1395066363000));
        assert_eq!(
            e.samples[2].label("path"),
            Some(r"C:\DIR\FILE.TXT"),
            "escaped backslashes"
        );
        assert_eq!(
            e.samples[2].label("error"),
            Some("Cannot find file:\n\"FILE.TXT\"")
        );
        assert_eq!(e.samples[4].value, f64::INFINITY);
        assert_eq!(e.samples[4].timestamp_ms, Some(-3982045));
        assert!(e.samples[5..10].iter().all(|s| s.family == 4));
        assert_eq!(e.samples[12].name, "rpc_duration_seconds_sum");
        assert_eq!(e.samples[12].family, 5);
        assert_eq!(
            e.families[0].help.as_deref(),
            Some("The total number of HTTP requests.")
        );
    }

    const OM: &str = r#"# TYPE acme_http_router_request_seconds summary
# UNIT acme_http_router_request_seconds seconds
# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.
acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32
acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0
acme_http_router_request_seconds_created{path="/api/v1",method="GET"} 1605281325.0
# TYPE go_goroutines gauge
go_goroutines 69
# TYPE foo counter
foo_total 17.0 1520879607.789 # {id="counter-test"} 5
foo_created 1520872607.123
# TYPE nan_gauge gauge
nan_gauge NaN
# EOF
"#;

    #[test]
    fn openmetrics_units_created_exemplars_and_seconds() {
        let e = parse(OM, Format::OpenMetrics).unwrap();
        assert_eq!(e.families[0].unit, Some("seconds"));
        assert_eq!(e.families[2].name, "foo");
        assert_eq!(e.samples[4].name, "foo_total");
        assert_eq!(e.samples[4].family, 2);
        assert_eq!(e.samples[4].timestamp_ms, Some(1520879607789));
        assert_eq!(e.samples[5].name, "foo_created");
        assert_eq!(e.samples[5].value, 1520872607.123);
        assert!(e.samples[6].value.is_nan());
        assert!(parse(OM.trim_end_matches("# EOF\n"), Format::OpenMetrics).is_err());
        assert!(parse("# EOF\nfoo 1\n", Format::OpenMetrics).is_err());
    }

    #[test]
    fn bad_lines_fail_with_their_line_number() {
        for (text, line) in [
            ("a 1\nb{x=\"1\" 2\n", 2),
            ("a{x=1} 2\n", 1),
            ("a 1 2 3\n", 1),
            ("a{x=\"\\q\"} 1\n", 1),
            ("1a 1\n", 1),
            ("a notanumber\n", 1),
            ("# TYPE a bogus\n", 1),
            ("a\n", 1),
        ] {
            let e = parse(text, Format::Text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    #[test]
    fn tolerates_blank_lines_trailing_commas_and_crlf() {
        let e = parse("\r\na{x=\"1\",} 2\r\n\n", Format::Text).unwrap();
        assert_eq!(e.samples.len(), 1);
        assert_eq!(e.samples[0].label("x"), Some("1"));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}"
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            (-1000i64..1000).prop_map(|v| v as f64),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(text in ".{0,400}", om in any::<bool>()) {
            let format = if om { Format::OpenMetrics } else { Format::Text };
            let _ = parse(&text, format);
        }

        #[test]
        fn never_panics_on_near_valid_input(
            lines in prop::collection::vec(
                "(# (TYPE|HELP|UNIT|EOF) )?[a-z_]{1,4}(\\{[a-z]{1,3}=\"[a-z\\\\\"n ]{0,4}\"?,?\\}?)? ?[-+0-9.eEInfNa]{0,6}( -?[0-9.]{0,5})?( # .{0,5})?",
                0..12,
            ),
            om in any::<bool>(),
        ) {
            let format = if om { Format::OpenMetrics } else { Format::Text };
            let text = lines.join("\n");
            if let Ok(parsed) = parse(&text, format) {
                // Whatever parses renders to something that parses to the same samples.
                let again = render(&parsed, format);
                let reparsed = parse(&again, format).unwrap();
                prop_assert_eq!(&parsed.samples, &reparsed.samples);
            }
        }

        #[test]
        fn rendered_samples_round_trip(
            samples in prop::collection::vec(
                (
                    name(),
                    prop::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,6}", ".{0,8}"), 0..4),
                    value(),
                    prop::option::of(-4_000_000_000_000i64..4_000_000_000_000),
                ),
                1..20,
            ),
            om in any::<bool>(),
        ) {
            let format = if om { Format::OpenMetrics } else { Format::Text };
            let labels: Vec<Vec<(String, String)>> = samples
                .iter()
                .map(|(_, l, _, _)| l.iter().map(|(k, v)| (k.clone(), v.replace('\r', ""))).collect())
                .collect();
            let mut exposition = Exposition::default();
            let names: Vec<String> = samples.iter().enumerate().map(|(i, s)| format!("{}_{i}", s.0)).collect();
            for (i, (_, _, value, ts)) in samples.iter().enumerate() {
                let name = &names[i];
                exposition.families.push(Family {
                    name: name.as_str(),
                    kind: MetricType::Gauge,
                    help: Some(Cow::Borrowed("some \\ help\nwith lines")),
                    unit: None,
                });
                exposition.samples.push(Sample {
                    family: i,
                    name: name.as_str(),
                    labels: labels[i]
                        .iter()
                        .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
                        .collect(),
                    value: *value,
                    timestamp_ms: *ts,
                });
            }
            let text = render(&exposition, format);
            let parsed = parse(&text, format).unwrap();
            prop_assert_eq!(&parsed.samples, &exposition.samples);
            prop_assert_eq!(parsed.families.len(), exposition.families.len());
            for (a, b) in parsed.families.iter().zip(&exposition.families) {
                prop_assert_eq!(a.name, b.name);
                prop_assert_eq!(a.kind, b.kind);
                prop_assert_eq!(&a.help, &b.help);
            }
        }
    }
}
