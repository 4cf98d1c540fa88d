//! The W3C `tracestate` header and its OpenTelemetry `ot` entry (`rv`, `th`), parsed and
//! written as the collector's `pkg/sampling` does: `ot` first with `rv`, then `th`, then other
//! `ot` keys; every other vendor's entry kept as it came, in order.

use super::threshold::{Randomness, Threshold, ValueError};

const MAX_MEMBERS: usize = 32;
const MAX_W3C_LENGTH: usize = 1024;
const MAX_KEY_LENGTH: usize = 256;
const MAX_TENANT_LENGTH: usize = 241;
const MAX_SYSTEM_LENGTH: usize = 14;
const MAX_OTEL_LENGTH: usize = 256;
const OTEL_VENDOR: &str = "ot";

/// Why a tracestate cannot be read. Messages are the collector's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    #[error("invalid tracestate size")]
    Size,
    #[error("invalid syntax")]
    Syntax,
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// A value as it arrived (case and all) with what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded<T> {
    pub text: String,
    pub value: T,
}

/// The `ot` vendor entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtelTraceState {
    pub rv: Option<Encoded<Randomness>>,
    pub th: Option<Encoded<Threshold>>,
    extra: Vec<(String, String)>,
}

impl OtelTraceState {
    /// Parses the value of an `ot=` entry: `key:value` pairs separated by `;`.
    pub fn parse(input: &str) -> Result<OtelTraceState, TraceStateError> {
        if input.len() > MAX_OTEL_LENGTH {
            return Err(TraceStateError::Size);
        }
        if !input.split(';').all(valid_otel_member) {
            return Err(TraceStateError::Syntax);
        }
        let mut state = OtelTraceState::default();
        let mut first_error = None;
        for member in input.split(';') {
            let Some((key, value)) = member.split_once(':') else {
                continue;
            };
            match key {
                "rv" => match Randomness::parse_rvalue(value) {
                    Ok(r) => {
                        state.rv = Some(Encoded {
                            text: value.to_string(),
                            value: r,
                        })
                    }
                    Err(e) => {
                        state.rv = None;
                        first_error.get_or_insert(e);
                    }
                },
                "th" => match Threshold::parse_tvalue(value) {
                    Ok(t) => {
                        state.th = Some(Encoded {
                            text: value.to_string(),
                            value: t,
                        })
                    }
                    Err(e) => {
                        state.th = None;
                        first_error.get_or_insert(e);
                    }
                },
                _ => state.extra.push((key.to_string(), value.to_string())),
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(state),
        }
    }

    pub fn set_randomness(&mut self, randomness: Randomness) {
        self.rv = Some(Encoded {
            text: randomness.rvalue(),
            value: randomness,
        });
    }

    pub fn set_threshold(&mut self, threshold: Threshold) {
        self.th = Some(Encoded {
            text: threshold.tvalue(),
            value: threshold,
        });
    }

    fn is_empty(&self) -> bool {
        self.rv.is_none() && self.th.is_none() && self.extra.is_empty()
    }

    fn write(&self, out: &mut String) {
        let mut first = true;
        let mut pair = |out: &mut String, key: &str, value: &str| {
            if !first {
                out.push(';');
            }
            first = false;
            out.push_str(key);
            out.push(':');
            out.push_str(value);
        };
        if let Some(rv) = &self.rv {
            pair(out, "rv", &rv.text);
        }
        if let Some(th) = &self.th {
            pair(out, "th", &th.text);
        }
        for (k, v) in &self.extra {
            pair(out, k, v);
        }
    }
}

/// A whole `tracestate` header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    pub ot: OtelTraceState,
    others: Vec<(String, String)>,
}

impl TraceState {
    pub fn parse(input: &str) -> Result<TraceState, TraceStateError> {
        let mut state = TraceState::default();
        if input.is_empty() {
            return Ok(state);
        }
        if input.len() > MAX_W3C_LENGTH {
            return Err(TraceStateError::Size);
        }
        let members: Vec<&str> = input
            .split(',')
            .map(|m| m.trim_matches([' ', '\t']))
            .filter(|m| !m.is_empty())
            .collect();
        if !members.iter().all(|m| valid_w3c_member(m)) {
            return Err(TraceStateError::Syntax);
        }
        if members.len() > MAX_MEMBERS {
            return Err(TraceStateError::Size);
        }
        let mut first_error = None;
        for member in members {
            let Some((key, value)) = member.split_once('=') else {
                continue;
            };
            if key.len() > MAX_KEY_LENGTH {
                first_error.get_or_insert(TraceStateError::Size);
                continue;
            }
            if let Some((tenant, system)) = key.split_once('@')
                && (tenant.len() > MAX_TENANT_LENGTH || system.len() > MAX_SYSTEM_LENGTH)
            {
                first_error.get_or_insert(TraceStateError::Size);
                continue;
            }
            if key == OTEL_VENDOR {
                match OtelTraceState::parse(value) {
                    Ok(ot) => state.ot = ot,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            } else {
                state.others.push((key.to_string(), value.to_string()));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(state),
        }
    }

    pub fn serialize(&self) -> String {
        let mut out = String::new();
        if !self.ot.is_empty() {
            out.push_str("ot=");
            self.ot.write(&mut out);
        }
        for (k, v) in &self.others {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out
    }
}

fn is_lc_alpha(c: u8) -> bool {
    c.is_ascii_lowercase()
}

fn is_lc_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_key_char(c: u8) -> bool {
    is_lc_alnum(c) || matches!(c, b'_' | b'-' | b'*' | b'/')
}

fn is_nonblank_value_char(c: u8) -> bool {
    matches!(c, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e)
}

/// `key "=" value` per W3C Trace Context; lengths are checked separately.
fn valid_w3c_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    valid_w3c_key(key.as_bytes()) && valid_w3c_value(value.as_bytes())
}

fn valid_w3c_key(key: &[u8]) -> bool {
    let Some(&first) = key.first() else {
        return false;
    };
    match key.iter().position(|&c| c == b'@') {
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            match (tenant.first(), system.first()) {
                (Some(&t), Some(&s)) => {
                    is_lc_alnum(t)
                        && is_lc_alpha(s)
                        && tenant[1..].iter().all(|&c| is_key_char(c))
                        && system[1..].iter().all(|&c| is_key_char(c))
                }
                _ => false,
            }
        }
        None => is_lc_alpha(first) && key[1..].iter().all(|&c| is_key_char(c)),
    }
}

fn valid_w3c_value(value: &[u8]) -> bool {
    match value.split_last() {
        Some((&last, rest)) if value.len() <= 256 => {
            is_nonblank_value_char(last)
                && rest.iter().all(|&c| c == b' ' || is_nonblank_value_char(c))
        }
        _ => false,
    }
}

/// `key ":" value` with key `[a-z][a-z0-9]*` and value `[a-zA-Z0-9._-]*`.
fn valid_otel_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once(':') else {
        return false;
    };
    let key = key.as_bytes();
    matches!(key.first(), Some(&c) if is_lc_alpha(c))
        && key[1..].iter().all(|&c| is_lc_alnum(c))
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(input: &str) -> String {
        TraceState::parse(input).unwrap().serialize()
    }

    #[test]
    fn keeps_other_vendors_and_puts_ot_first() {
        assert_eq!(
            round_trip("congo=t61rcWkgMzE, ot=th:8;rv:90000000000000;xx:y ,rojo=00f067aa0ba902b7"),
            "ot=rv:90000000000000;th:8;xx:y,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        assert_eq!(round_trip(""), "");
        assert_eq!(round_trip("a@b=1,,c=2"), "a@b=1,c=2");
    }

    #[test]
    fn updates_keep_rv_text_and_rewrite_th() {
        let mut ts = TraceState::parse("ot=rv:FD70A3D70A3D71,other=x").unwrap();
        assert_eq!(ts.ot.rv.as_ref().unwrap().text, "FD70A3D70A3D71");
        ts.ot
            .set_threshold(Threshold::parse_tvalue("fd70a").unwrap());
        assert_eq!(ts.serialize(), "ot=rv:FD70A3D70A3D71;th:fd70a,other=x");
    }

    #[test]
    fn errors_carry_the_collectors_messages() {
        let msg = |s: &str| TraceState::parse(s).unwrap_err().to_string();
        assert_eq!(
            msg("ot=rv:abababababababab"),
            "r-value must have 14 hex digits"
        );
        assert_eq!(
            msg("ot=th:abababababababab"),
            "t-value exceeds 14 hex digits"
        );
        assert!(msg("ot=th:-1").contains("invalid syntax"));
        assert_eq!(msg("Upper=1"), "invalid syntax");
        assert_eq!(msg("ot=TH:1"), "invalid syntax");
        assert_eq!(msg("ot=th:8 ;rv:1"), "invalid syntax");
        assert_eq!(msg("k=v\u{7f}"), "invalid syntax");
        assert_eq!(msg(&"a".repeat(1025)), "invalid tracestate size");
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(msg(&many.join(",")), "invalid tracestate size");
    }

    #[test]
    fn thirty_two_members_are_allowed() {
        let many: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert!(TraceState::parse(&many.join(",")).is_ok());
    }

    proptest! {
        #[test]
        fn parse_never_panics(input in "\\PC{0,300}") {
            let _ = TraceState::parse(&input);
        }

        #[test]
        fn serialized_state_parses_back_the_same(
            rv in proptest::option::of(0u64..(1u64 << 56)),
            th in proptest::option::of("[0-9a-f]{1,14}"),
            others in proptest::collection::vec(("[a-z][a-z0-9_*/-]{0,8}", "[!-+\\--<>-~]{1,10}"), 0..5),
        ) {
            let mut parts = Vec::new();
            let mut ot = Vec::new();
            if let Some(rv) = rv { ot.push(format!("rv:{:014x}", rv)); }
            if let Some(th) = &th { ot.push(format!("th:{th}")); }
            if !ot.is_empty() { parts.push(format!("ot={}", ot.join(";"))); }
            for (k, v) in &others {
                if k != "ot" { parts.push(format!("{k}={v}")); }
            }
            let input = parts.join(",");
            let parsed = TraceState::parse(&input).unwrap();
            prop_assert_eq!(parsed.serialize(), input.clone());
            prop_assert_eq!(TraceState::parse(&parsed.serialize()).unwrap(), parsed);
        }
    }
}
