//! Timestamp layouts of the collector's `timestamp` blocks and `time_parser`: `strptime`
//! directives (as the collector maps them to Go layouts), Go `gotime` layouts and `epoch`
//! units, parsed the way Go's `time.Parse` reads them. Layouts without a zone are read as
//! UTC; zone names other than UTC/GMT are refused per value. Nothing here panics.

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};

use super::parser::days_from_civil;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pad {
    Zero,
    Space,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    Lit(char),
    Year4,
    Year2,
    Month(Pad),
    MonthAbbr,
    MonthFull,
    Day(Pad),
    WeekdayAbbr,
    WeekdayFull,
    Hour24(Pad),
    Hour12(Pad),
    AmPm,
    Minute(Pad),
    Second(Pad),
    /// A fraction after `.` or `,`: `Some(n)` exactly n digits, `None` any (and optional).
    Frac(Option<usize>),
    ZoneName,
    /// UTC offset: `z` accepts `Z`; `parts` is 1 (±hh), 2 (±hh:mm) or 3 (±hh:mm:ss);
    /// `colon` whether the parts are separated by `:`.
    ZoneOffset {
        z: bool,
        parts: u8,
        colon: bool,
    },
}

/// A compiled layout.
#[derive(Clone, Debug)]
pub enum TimeLayout {
    Tokens(Vec<Tok>),
    Epoch(EpochUnit),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochUnit {
    S,
    Ms,
    Us,
    Ns,
    SMs,
    SUs,
    SNs,
}

impl TimeLayout {
    /// `layout_type` is `strptime`, `gotime` or `epoch`, as the collector accepts them.
    pub fn compile(layout_type: &str, layout: &str) -> Result<TimeLayout, String> {
        if layout.is_empty() {
            return Err("missing required configuration parameter `layout`".into());
        }
        match layout_type {
            "strptime" | "" => strptime(layout).map(TimeLayout::Tokens),
            "gotime" => gotime(layout).map(TimeLayout::Tokens),
            "epoch" => Ok(TimeLayout::Epoch(match layout {
                "s" => EpochUnit::S,
                "ms" => EpochUnit::Ms,
                "us" => EpochUnit::Us,
                "ns" => EpochUnit::Ns,
                "s.ms" => EpochUnit::SMs,
                "s.us" => EpochUnit::SUs,
                "s.ns" => EpochUnit::SNs,
                _ => {
                    return Err(
                        "invalid `layout` for `epoch` type: specify 's', 'ms', 'us', 'ns', 's.ms', 's.us', or 's.ns'"
                            .into(),
                    );
                }
            })),
            "native" => Err("layout_type `native` is not supported yet".into()),
            other => Err(format!(
                "unsupported layout_type {other}: valid values are 'strptime', 'gotime', and 'epoch'"
            )),
        }
    }

    /// Nanoseconds since the epoch (as Go's `UnixNano`, wrapped into u64 as the collector's
    /// converter does), given the current time for layouts without a year.
    pub fn parse(&self, value: &AnyValue, now_ns: u64) -> Result<u64, String> {
        match self {
            TimeLayout::Tokens(toks) => match &value.value {
                Some(Value::StringValue(s)) => parse_tokens(toks, s, now_ns),
                Some(Value::BytesValue(b)) => {
                    parse_tokens(toks, &String::from_utf8_lossy(b), now_ns)
                }
                _ => Err(format!(
                    "type {} cannot be parsed as a time",
                    type_name(value)
                )),
            },
            TimeLayout::Epoch(unit) => parse_epoch(*unit, value),
        }
    }
}

pub fn type_name(v: &AnyValue) -> &'static str {
    match &v.value {
        None => "<nil>",
        Some(Value::StringValue(_)) => "string",
        Some(Value::BoolValue(_)) => "bool",
        Some(Value::IntValue(_)) => "int64",
        Some(Value::DoubleValue(_)) => "float64",
        Some(Value::ArrayValue(_)) => "[]interface {}",
        Some(Value::KvlistValue(_)) => "map[string]interface {}",
        Some(Value::BytesValue(_)) => "[]uint8",
        Some(_) => "unknown",
    }
}

fn strptime(layout: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = layout.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            toks.push(Tok::Lit(c));
            continue;
        }
        let Some(d) = chars.next() else {
            return Err("strptime layout ends with a lone `%`".into());
        };
        let expand = |s: &str, toks: &mut Vec<Tok>| -> Result<(), String> {
            toks.extend(strptime(s)?);
            Ok(())
        };
        match d {
            'Y' => toks.push(Tok::Year4),
            'y' => toks.push(Tok::Year2),
            'm' => toks.push(Tok::Month(Pad::Zero)),
            'o' => toks.push(Tok::Month(Pad::Space)),
            'q' => toks.push(Tok::Month(Pad::None)),
            'b' | 'h' => toks.push(Tok::MonthAbbr),
            'B' => toks.push(Tok::MonthFull),
            'd' => toks.push(Tok::Day(Pad::Zero)),
            'e' => toks.push(Tok::Day(Pad::Space)),
            'g' => toks.push(Tok::Day(Pad::None)),
            'a' => toks.push(Tok::WeekdayAbbr),
            'A' => toks.push(Tok::WeekdayFull),
            'H' => toks.push(Tok::Hour24(Pad::Zero)),
            'I' => toks.push(Tok::Hour12(Pad::None)),
            'l' => toks.push(Tok::Hour12(Pad::Zero)),
            'p' | 'P' => toks.push(Tok::AmPm),
            'M' => toks.push(Tok::Minute(Pad::Zero)),
            'S' => toks.push(Tok::Second(Pad::Zero)),
            'L' | 'f' | 's' => {
                // Go reads these as a fraction only after `.` or `,`.
                match toks.last() {
                    Some(Tok::Lit('.' | ',')) => {
                        toks.pop();
                        toks.push(Tok::Frac(None));
                    }
                    _ => {
                        return Err(format!(
                            "`%{d}` is supported only after `.` or `,` (as a fraction of a second)"
                        ));
                    }
                }
            }
            'Z' => toks.push(Tok::ZoneName),
            'z' => toks.push(Tok::ZoneOffset {
                z: true,
                parts: 2,
                colon: false,
            }),
            'i' => toks.push(Tok::ZoneOffset {
                z: false,
                parts: 1,
                colon: false,
            }),
            'j' => toks.push(Tok::ZoneOffset {
                z: false,
                parts: 2,
                colon: true,
            }),
            'k' => toks.push(Tok::ZoneOffset {
                z: false,
                parts: 3,
                colon: true,
            }),
            'D' => expand("%m/%d/%y", &mut toks)?,
            'F' => expand("%Y-%m-%d", &mut toks)?,
            'T' => expand("%H:%M:%S", &mut toks)?,
            'r' => expand("%l:%M:%S %p", &mut toks)?,
            'c' => expand("%a %b %d %H:%M:%S %Y", &mut toks)?,
            'R' => expand("%H:%M", &mut toks)?,
            'n' => toks.push(Tok::Lit('\n')),
            't' => toks.push(Tok::Lit('\t')),
            '%' => toks.push(Tok::Lit('%')),
            other => return Err(format!("unsupported strptime directive `%{other}`")),
        }
    }
    Ok(toks)
}

/// Go layout chunks, longest first where one is a prefix of another.
fn gotime(layout: &str) -> Result<Vec<Tok>, String> {
    type Chunk = (&'static str, fn() -> Tok);
    const CHUNKS: &[Chunk] = &[
        ("January", || Tok::MonthFull),
        ("Jan", || Tok::MonthAbbr),
        ("Monday", || Tok::WeekdayFull),
        ("Mon", || Tok::WeekdayAbbr),
        ("MST", || Tok::ZoneName),
        ("2006", || Tok::Year4),
        ("-07:00:00", || Tok::ZoneOffset {
            z: false,
            parts: 3,
            colon: true,
        }),
        ("-070000", || Tok::ZoneOffset {
            z: false,
            parts: 3,
            colon: false,
        }),
        ("-07:00", || Tok::ZoneOffset {
            z: false,
            parts: 2,
            colon: true,
        }),
        ("-0700", || Tok::ZoneOffset {
            z: false,
            parts: 2,
            colon: false,
        }),
        ("-07", || Tok::ZoneOffset {
            z: false,
            parts: 1,
            colon: false,
        }),
        ("Z07:00:00", || Tok::ZoneOffset {
            z: true,
            parts: 3,
            colon: true,
        }),
        ("Z070000", || Tok::ZoneOffset {
            z: true,
            parts: 3,
            colon: false,
        }),
        ("Z07:00", || Tok::ZoneOffset {
            z: true,
            parts: 2,
            colon: true,
        }),
        ("Z0700", || Tok::ZoneOffset {
            z: true,
            parts: 2,
            colon: false,
        }),
        ("Z07", || Tok::ZoneOffset {
            z: true,
            parts: 1,
            colon: false,
        }),
        ("01", || Tok::Month(Pad::Zero)),
        ("02", || Tok::Day(Pad::Zero)),
        ("03", || Tok::Hour12(Pad::Zero)),
        ("04", || Tok::Minute(Pad::Zero)),
        ("05", || Tok::Second(Pad::Zero)),
        ("06", || Tok::Year2),
        ("15", || Tok::Hour24(Pad::None)),
        ("_2", || Tok::Day(Pad::Space)),
        ("1", || Tok::Month(Pad::None)),
        ("2", || Tok::Day(Pad::None)),
        ("3", || Tok::Hour12(Pad::None)),
        ("4", || Tok::Minute(Pad::None)),
        ("5", || Tok::Second(Pad::None)),
        ("PM", || Tok::AmPm),
        ("pm", || Tok::AmPm),
    ];
    let mut toks = Vec::new();
    let mut rest = layout;
    'outer: while let Some(c) = rest.chars().next() {
        // Fractions: `.000` / `,000` (exact) and `.999` / `,999` (any), as Go reads them.
        if (c == '.' || c == ',') && rest.len() > 1 {
            let after = &rest[1..];
            for digit in ['0', '9'] {
                let n = after.chars().take_while(|&d| d == digit).count();
                let next_is_digit = after[n..]
                    .chars()
                    .next()
                    .is_some_and(|d| d.is_ascii_digit());
                if n > 0 && !next_is_digit {
                    toks.push(Tok::Frac(if digit == '0' { Some(n) } else { None }));
                    rest = &after[n..];
                    continue 'outer;
                }
            }
        }
        if rest.starts_with("002") || rest.starts_with("__2") {
            return Err("day-of-year layouts are not supported yet".into());
        }
        for (chunk, tok) in CHUNKS {
            if let Some(r) = rest.strip_prefix(chunk) {
                // Go reads "Jan"/"Mon" only when not followed by a lowercase letter.
                if matches!(*chunk, "Jan" | "Mon")
                    && r.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                {
                    continue;
                }
                toks.push(tok());
                rest = r;
                continue 'outer;
            }
        }
        toks.push(Tok::Lit(c));
        rest = &rest[c.len_utf8()..];
    }
    Ok(toks)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn bad(value: &str) -> String {
    format!("cannot parse `{value}` with the layout")
}

/// Reads 1–2 digits (`fixed`: exactly 2), as Go's `getnum`.
fn getnum(s: &[u8], fixed: bool) -> Option<(i64, usize)> {
    let d0 = *s.first()?;
    if !d0.is_ascii_digit() {
        return None;
    }
    match s.get(1) {
        Some(d1) if d1.is_ascii_digit() => {
            Some((i64::from(d0 - b'0') * 10 + i64::from(d1 - b'0'), 2))
        }
        _ if fixed => None,
        _ => Some((i64::from(d0 - b'0'), 1)),
    }
}

fn prefix_ci(s: &[u8], word: &str) -> bool {
    s.len() >= word.len() && s[..word.len()].eq_ignore_ascii_case(word.as_bytes())
}

fn lookup_name(s: &[u8], names: &[&str], abbr: bool) -> Option<(usize, usize)> {
    names.iter().enumerate().find_map(|(i, n)| {
        let n = if abbr { &n[..3] } else { n };
        prefix_ci(s, n).then_some((i, n.len()))
    })
}

fn parse_tokens(toks: &[Tok], value: &str, now_ns: u64) -> Result<u64, String> {
    let s = value.as_bytes();
    let mut i = 0usize;
    let (mut year, mut month, mut day) = (None::<i64>, 1i64, 1i64);
    let (mut hour, mut min, mut sec, mut nanos) = (0i64, 0i64, 0i64, 0i64);
    let mut pm: Option<bool> = None;
    let mut hour12 = false;
    let mut offset = 0i64;
    let err = || bad(value);
    for (t, tok) in toks.iter().enumerate() {
        let rest = s.get(i..).unwrap_or_default();
        match tok {
            Tok::Lit(c) => {
                let mut buf = [0u8; 4];
                let lit = c.encode_utf8(&mut buf).as_bytes();
                if !rest.starts_with(lit) {
                    return Err(err());
                }
                i += lit.len();
            }
            Tok::Year4 => {
                let d = rest.get(..4).ok_or_else(err)?;
                if !d.iter().all(u8::is_ascii_digit) {
                    return Err(err());
                }
                year = Some(d.iter().fold(0i64, |a, &b| a * 10 + i64::from(b - b'0')));
                i += 4;
            }
            Tok::Year2 => {
                let (y, n) = getnum(rest, true).ok_or_else(err)?;
                year = Some(if y >= 69 { 1900 + y } else { 2000 + y });
                i += n;
            }
            Tok::Month(pad)
            | Tok::Day(pad)
            | Tok::Hour24(pad)
            | Tok::Hour12(pad)
            | Tok::Minute(pad)
            | Tok::Second(pad) => {
                let mut r = rest;
                if *pad == Pad::Space && r.first() == Some(&b' ') {
                    r = &r[1..];
                    i += 1;
                }
                let fixed = *pad == Pad::Zero && !matches!(tok, Tok::Hour24(_));
                let (v, n) = getnum(r, fixed).ok_or_else(err)?;
                i += n;
                match tok {
                    Tok::Month(_) => month = v,
                    Tok::Day(_) => day = v,
                    Tok::Hour24(_) => hour = v,
                    Tok::Hour12(_) => {
                        hour = v;
                        hour12 = true;
                    }
                    Tok::Minute(_) => min = v,
                    _ => {
                        sec = v;
                        // Go reads a fraction after the seconds even when the layout has none.
                        if !matches!(toks.get(t + 1), Some(Tok::Frac(_))) {
                            let r = s.get(i..).unwrap_or_default();
                            if r.len() >= 2
                                && (r[0] == b'.' || r[0] == b',')
                                && r[1].is_ascii_digit()
                            {
                                let n = r[1..].iter().take_while(|d| d.is_ascii_digit()).count();
                                nanos = frac(&r[1..1 + n]);
                                i += 1 + n;
                            }
                        }
                    }
                }
            }
            Tok::Frac(exact) => {
                let present = rest.len() >= 2
                    && (rest[0] == b'.' || rest[0] == b',')
                    && rest[1].is_ascii_digit();
                match exact {
                    Some(n) => {
                        let d = rest.get(1..1 + n).ok_or_else(err)?;
                        if !(rest[0] == b'.' || rest[0] == b',')
                            || !d.iter().all(u8::is_ascii_digit)
                        {
                            return Err(err());
                        }
                        nanos = frac(d);
                        i += 1 + n;
                    }
                    None if present => {
                        let n = rest[1..].iter().take_while(|d| d.is_ascii_digit()).count();
                        nanos = frac(&rest[1..1 + n]);
                        i += 1 + n;
                    }
                    None => {}
                }
            }
            Tok::MonthAbbr | Tok::MonthFull => {
                let (m, n) = lookup_name(rest, &MONTHS, *tok == Tok::MonthAbbr).ok_or_else(err)?;
                month = m as i64 + 1;
                i += n;
            }
            Tok::WeekdayAbbr | Tok::WeekdayFull => {
                let (_, n) =
                    lookup_name(rest, &WEEKDAYS, *tok == Tok::WeekdayAbbr).ok_or_else(err)?;
                i += n;
            }
            Tok::AmPm => {
                if prefix_ci(rest, "PM") {
                    pm = Some(true);
                } else if prefix_ci(rest, "AM") {
                    pm = Some(false);
                } else {
                    return Err(err());
                }
                i += 2;
            }
            Tok::ZoneName => {
                let n = rest.iter().take_while(|c| c.is_ascii_uppercase()).count();
                match &rest[..n] {
                    b"UTC" | b"GMT" | b"Z" => {}
                    b"" => return Err(err()),
                    other => {
                        return Err(format!(
                            "time zone `{}` is not supported yet (only UTC and GMT)",
                            String::from_utf8_lossy(other)
                        ));
                    }
                }
                i += n;
            }
            Tok::ZoneOffset { z, parts, colon } => {
                if *z && rest.first() == Some(&b'Z') {
                    i += 1;
                    continue;
                }
                let sign = match rest.first() {
                    Some(b'+') => 1,
                    Some(b'-') => -1,
                    _ => return Err(err()),
                };
                let mut j = 1;
                let mut total = 0i64;
                for p in 0..*parts {
                    if p > 0 && *colon {
                        if rest.get(j) != Some(&b':') {
                            return Err(err());
                        }
                        j += 1;
                    }
                    let (v, _) = getnum(rest.get(j..).unwrap_or_default(), true).ok_or_else(err)?;
                    total += v * [3600, 60, 1][p as usize];
                    j += 2;
                }
                offset = sign * total;
                i += j;
            }
        }
    }
    if i != s.len() {
        return Err(format!("extra text after the timestamp in `{value}`"));
    }
    if hour12 {
        if hour > 12 {
            return Err(err());
        }
        match pm {
            Some(true) if hour < 12 => hour += 12,
            Some(false) if hour == 12 => hour = 0,
            _ => {}
        }
    }
    if !(1..=12).contains(&month) || hour > 23 || min > 59 || sec > 59 {
        return Err(format!("value out of range in `{value}`"));
    }
    let year_given = year.is_some();
    let mut y = year.unwrap_or(0);
    if !year_given {
        // As the collector: a year-less timestamp is this year, or last year if that puts
        // it more than 7 days ahead.
        let now_days = (now_ns / 1_000_000_000 / 86_400) as i64;
        y = civil_year(now_days);
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day < 1 || day > days_in[(month - 1) as usize] {
        return Err(format!("day out of range in `{value}`"));
    }
    let mut ns = to_ns(y, month, day, hour, min, sec, nanos, offset);
    if !year_given && ns > i128::from(now_ns) + 7 * 86_400 * 1_000_000_000 {
        ns = to_ns(y - 1, month, day, hour, min, sec, nanos, offset);
    }
    Ok(ns as u64)
}

#[allow(clippy::too_many_arguments)]
fn to_ns(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, nanos: i64, offset: i64) -> i128 {
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset;
    i128::from(secs) * 1_000_000_000 + i128::from(nanos)
}

fn civil_year(days: i64) -> i64 {
    // Inverse of days_from_civil, year only (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(m <= 2)
}

/// Digits after the decimal point as nanoseconds (beyond 9 digits ignored).
fn frac(d: &[u8]) -> i64 {
    let mut v = 0i64;
    for k in 0..9 {
        v = v * 10 + d.get(k).map_or(0, |c| i64::from(c - b'0'));
    }
    v
}

fn parse_epoch(unit: EpochUnit, value: &AnyValue) -> Result<u64, String> {
    let seconds_part = matches!(unit, EpochUnit::SMs | EpochUnit::SUs | EpochUnit::SNs);
    // The text Go builds from the value (`getEpochStamp`).
    let stamp = match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::IntValue(i)) if seconds_part => format!("{i}.0"),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(f)) => match unit {
            EpochUnit::SMs => format!("{f:>10.3}"),
            EpochUnit::SUs => format!("{f:>10.6}"),
            EpochUnit::SNs => format!("{f:>10.9}"),
            _ => (*f as i64).to_string(),
        },
        _ => {
            return Err(format!(
                "type {} cannot be parsed as a time",
                type_name(value)
            ));
        }
    };
    let invalid = || format!("invalid value '{stamp}' for the epoch layout");
    let ns: i128 = if seconds_part {
        let mut parts = stamp.split('.');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let sec: i64 = a.parse().map_err(|_| invalid())?;
        let sub: i64 = b.parse().map_err(|_| invalid())?;
        let scale = match unit {
            EpochUnit::SMs => 1_000_000,
            EpochUnit::SUs => 1_000,
            _ => 1,
        };
        i128::from(sec) * 1_000_000_000 + i128::from(sub) * scale
    } else {
        let v: i64 = stamp.parse().map_err(|_| invalid())?;
        let scale = match unit {
            EpochUnit::S => 1_000_000_000,
            EpochUnit::Ms => 1_000_000,
            EpochUnit::Us => 1_000,
            _ => 1,
        };
        i128::from(v) * scale
    };
    Ok(ns as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(v.into())),
        }
    }

    const NOW: u64 = 1_700_000_000_000_000_000;

    #[test]
    fn strptime_and_gotime_read_the_collector_examples() {
        let l = TimeLayout::compile("strptime", "%Y-%m-%dT%H:%M:%S.%LZ").unwrap();
        assert_eq!(
            l.parse(&s("2022-01-02T14:24:56.123Z"), NOW),
            Ok(1_641_133_496_123_000_000)
        );
        let l = TimeLayout::compile("strptime", "%Y-%m-%d %H:%M:%S.%f %z").unwrap();
        assert_eq!(
            l.parse(&s("2022-01-02 07:24:56.123 -0700"), NOW),
            Ok(1_641_133_496_123_000_000)
        );
        let l = TimeLayout::compile("gotime", "2006-01-02T15:04:05.999999999Z07:00").unwrap();
        assert_eq!(
            l.parse(&s("2022-01-02T14:24:56.123123123Z"), NOW),
            Ok(1_641_133_496_123_123_123)
        );
        assert_eq!(
            l.parse(&s("2022-01-02T15:24:56+01:00"), NOW),
            Ok(1_641_133_496_000_000_000)
        );
        let l = TimeLayout::compile("gotime", "Jan 2 15:04:05 2006").unwrap();
        assert_eq!(
            l.parse(&s("Jun 5 13:50:27 2020"), NOW),
            Ok(1_591_365_027_000_000_000)
        );
        assert!(l.parse(&s("Jun 31 13:50:27 2020"), NOW).is_err());
        let l = TimeLayout::compile("epoch", "s").unwrap();
        let f = AnyValue {
            value: Some(Value::DoubleValue(1_136_214_245.0)),
        };
        assert_eq!(l.parse(&f, NOW), Ok(1_136_214_245_000_000_000));
        let l = TimeLayout::compile("epoch", "s.ms").unwrap();
        assert_eq!(
            l.parse(&s("1136214245.123"), NOW),
            Ok(1_136_214_245_123_000_000)
        );
        assert!(TimeLayout::compile("epoch", "m").is_err());
        assert!(TimeLayout::compile("strptime", "%Q").is_err());
        assert!(TimeLayout::compile("other", "%Y").is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(layout in "[%a-zA-Z0-9 :.,_+-]{0,20}", value in "\\PC{0,30}") {
            for kind in ["strptime", "gotime", "epoch"] {
                if let Ok(l) = TimeLayout::compile(kind, &layout) {
                    let _ = l.parse(&s(&value), NOW);
                }
            }
        }
    }
}
