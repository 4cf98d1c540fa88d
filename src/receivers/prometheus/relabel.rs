//! Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`) with Prometheus'
//! defaults and semantics: anchored RE2-style regexes, `$1`/`${1}`/`$name` replacements.

use regex::Regex;
use serde::Deserialize;

/// A label set, kept sorted by name.
pub type Labels = Vec<(String, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Replace,
    Keep,
    Drop,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
    KeepEqual,
    DropEqual,
}

/// One relabel rule as written in YAML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    pub separator: String,
    #[serde(default)]
    pub target_label: Option<String>,
    #[serde(default = "default_regex")]
    pub regex: String,
    #[serde(default)]
    pub modulus: u64,
    #[serde(default = "default_replacement")]
    pub replacement: String,
    #[serde(default = "default_action")]
    pub action: Action,
}

fn default_separator() -> String {
    ";".into()
}
fn default_regex() -> String {
    "(.*)".into()
}
fn default_replacement() -> String {
    "$1".into()
}
fn default_action() -> Action {
    Action::Replace
}

/// A validated rule with its regex compiled (anchored at both ends, as in Prometheus).
#[derive(Clone, Debug)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    modulus: u64,
    replacement: String,
    action: Action,
}

impl Rule {
    pub fn compile(c: &RelabelConfig) -> Result<Rule, String> {
        let regex = Regex::new(&format!("^(?:{})$", c.regex))
            .map_err(|e| format!("invalid regex `{}`: {e}", c.regex))?;
        let target = c.target_label.clone().unwrap_or_default();
        match c.action {
            Action::Replace | Action::HashMod if target.is_empty() => {
                return Err(format!(
                    "relabel action `{}` requires `target_label`",
                    action_name(c.action)
                ));
            }
            Action::HashMod if c.modulus == 0 => {
                return Err("relabel action `hashmod` requires a non-zero `modulus`".into());
            }
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual => {
                return Err(format!(
                    "relabel action `{}` is not supported yet (supported: replace, keep, drop, hashmod, labelmap, labeldrop, labelkeep)",
                    action_name(c.action)
                ));
            }
            Action::LabelDrop | Action::LabelKeep
                if !c.source_labels.is_empty() || !target.is_empty() =>
            {
                return Err(format!(
                    "`source_labels` and `target_label` are not allowed with action `{}`",
                    action_name(c.action)
                ));
            }
            _ => {}
        }
        Ok(Rule {
            source_labels: c.source_labels.clone(),
            separator: c.separator.clone(),
            target_label: target,
            regex,
            modulus: c.modulus,
            replacement: c.replacement.clone(),
            action: c.action,
        })
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Replace => "replace",
        Action::Keep => "keep",
        Action::Drop => "drop",
        Action::HashMod => "hashmod",
        Action::LabelMap => "labelmap",
        Action::LabelDrop => "labeldrop",
        Action::LabelKeep => "labelkeep",
        Action::Lowercase => "lowercase",
        Action::Uppercase => "uppercase",
        Action::KeepEqual => "keepequal",
        Action::DropEqual => "dropequal",
    }
}

pub fn compile_all(configs: &[RelabelConfig]) -> Result<Vec<Rule>, String> {
    configs.iter().map(Rule::compile).collect()
}

fn get<'a>(labels: &'a Labels, name: &str) -> &'a str {
    match labels.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) => &labels[i].1,
        Err(_) => "",
    }
}

/// Sets (or, for an empty value, deletes) a label, keeping the set sorted.
pub fn set(labels: &mut Labels, name: &str, value: String) {
    match labels.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            labels.remove(i);
        }
        Ok(i) => labels[i].1 = value,
        Err(_) if value.is_empty() => {}
        Err(i) => labels.insert(i, (name.to_string(), value)),
    }
}

/// Applies the rules in order; `false` means the target or series is dropped.
pub fn apply(rules: &[Rule], labels: &mut Labels) -> bool {
    rules.iter().all(|rule| apply_one(rule, labels))
}

fn apply_one(rule: &Rule, labels: &mut Labels) -> bool {
    let value = || {
        let mut v = String::new();
        for (i, name) in rule.source_labels.iter().enumerate() {
            if i > 0 {
                v.push_str(&rule.separator);
            }
            v.push_str(get(labels, name));
        }
        v
    };
    match rule.action {
        Action::Keep => rule.regex.is_match(&value()),
        Action::Drop => !rule.regex.is_match(&value()),
        Action::Replace => {
            let v = value();
            let Some(caps) = rule.regex.captures(&v) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&rule.target_label, &mut target);
            if !super::parser::is_label_name(&target) {
                return true;
            }
            let mut result = String::new();
            caps.expand(&rule.replacement, &mut result);
            set(labels, &target, result);
            true
        }
        Action::HashMod => {
            let digest = md5::compute(value().as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&digest.0[8..]);
            let m = u64::from_be_bytes(tail) % rule.modulus;
            set(labels, &rule.target_label, m.to_string());
            true
        }
        Action::LabelMap => {
            let mut added = Vec::new();
            for (name, value) in labels.iter() {
                if let Some(caps) = rule.regex.captures(name) {
                    let mut new_name = String::new();
                    caps.expand(&rule.replacement, &mut new_name);
                    added.push((new_name, value.clone()));
                }
            }
            for (name, value) in added {
                set(labels, &name, value);
            }
            true
        }
        Action::LabelDrop => {
            labels.retain(|(name, _)| !rule.regex.is_match(name));
            true
        }
        Action::LabelKeep => {
            labels.retain(|(name, _)| rule.regex.is_match(name));
            true
        }
        Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<Rule> {
        let node = crate::config::node::parse("t.yaml", yaml).unwrap();
        let configs: Vec<RelabelConfig> = crate::config::node::from_node(&node, "r").unwrap();
        compile_all(&configs).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut l: Labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        l
    }

    // Cases from Prometheus' model/relabel/relabel_test.go and the configuration docs.
    #[test]
    fn replace_with_capture_groups() {
        let r = rules(
            "- source_labels: [a]\n  regex: f(.*)\n  target_label: d\n  separator: ';'\n  replacement: ch${1}-ch${1}\n",
        );
        let mut l = labels(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        assert!(apply(&r, &mut l));
        assert_eq!(
            l,
            labels(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")])
        );
    }

    #[test]
    fn replace_joins_sources_and_is_anchored() {
        let r = rules(
            "- source_labels: [a, b]\n  regex: f(.*);(.*)r\n  target_label: a\n  replacement: b${1}${2}m\n",
        );
        let mut l = labels(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        assert!(apply(&r, &mut l));
        assert_eq!(get(&l, "a"), "boobam");
        // Anchored: `o` does not match "foo" as a substring would.
        let r = rules("- source_labels: [a]\n  regex: o\n  target_label: x\n");
        let mut l = labels(&[("a", "foo")]);
        apply(&r, &mut l);
        assert_eq!(get(&l, "x"), "");
    }

    #[test]
    fn replace_with_an_empty_result_deletes_the_target() {
        let r =
            rules("- source_labels: [a]\n  regex: (f).*\n  target_label: b\n  replacement: $2\n");
        let mut l = labels(&[("a", "foo"), ("b", "bar")]);
        apply(&r, &mut l);
        assert_eq!(l, labels(&[("a", "foo")]));
    }

    #[test]
    fn replace_target_label_templates_and_go_expansion() {
        // `$1x` names a group "1x" (empty), as Go's Expand does.
        let r = rules(
            "- source_labels: [a]\n  regex: (.*)\n  target_label: ${1}\n  replacement: $1x\n",
        );
        let mut l = labels(&[("a", "some_name")]);
        apply(&r, &mut l);
        assert_eq!(l, labels(&[("a", "some_name")]));
        let r = rules("- source_labels: [a]\n  target_label: ${1}\n");
        let mut l = labels(&[("a", "some_name")]);
        apply(&r, &mut l);
        assert_eq!(get(&l, "some_name"), "some_name");
        // An invalid label name as target leaves the set unchanged.
        let mut l = labels(&[("a", "1bad")]);
        apply(&r, &mut l);
        assert_eq!(l, labels(&[("a", "1bad")]));
    }

    #[test]
    fn keep_and_drop() {
        let keep = rules("- source_labels: [a]\n  regex: f.*\n  action: keep\n");
        assert!(apply(&keep, &mut labels(&[("a", "foo")])));
        assert!(!apply(&keep, &mut labels(&[("a", "boo")])));
        assert!(!apply(&keep, &mut labels(&[])));
        let drop = rules("- source_labels: [a]\n  regex: f.*\n  action: drop\n");
        assert!(!apply(&drop, &mut labels(&[("a", "foo")])));
        assert!(apply(&drop, &mut labels(&[("a", "boo")])));
        // The documented "drop every series of a metric" example.
        let drop_name = rules("- source_labels: [__name__]\n  regex: go_gc_.*\n  action: drop\n");
        assert!(!apply(
            &drop_name,
            &mut labels(&[("__name__", "go_gc_duration_seconds")])
        ));
        assert!(apply(&drop_name, &mut labels(&[("__name__", "up")])));
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // relabel_test.go: hashmod of "baz" with modulus 1000 is 976 (last 8 bytes of the MD5).
        let r = rules(
            "- source_labels: [c]\n  target_label: d\n  separator: ';'\n  modulus: 1000\n  action: hashmod\n",
        );
        let mut l = labels(&[("a", "foo"), ("b", "bar"), ("c", "baz")]);
        apply(&r, &mut l);
        assert_eq!(get(&l, "d"), "976");
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        let r = rules(
            "- regex: __meta_kubernetes_pod_label_(.+)\n  action: labelmap\n  replacement: k8s_$1\n",
        );
        let mut l = labels(&[
            ("__meta_kubernetes_pod_label_app", "web"),
            ("instance", "x"),
        ]);
        apply(&r, &mut l);
        assert_eq!(
            l,
            labels(&[
                ("__meta_kubernetes_pod_label_app", "web"),
                ("instance", "x"),
                ("k8s_app", "web")
            ])
        );
        let r = rules("- regex: (b.*)\n  action: labeldrop\n");
        let mut l = labels(&[("a", "1"), ("b1", "2"), ("b2", "3"), ("cb", "4")]);
        apply(&r, &mut l);
        assert_eq!(l, labels(&[("a", "1"), ("cb", "4")]));
        let r = rules("- regex: (b.*)\n  action: labelkeep\n");
        let mut l = labels(&[("a", "1"), ("b1", "2"), ("b2", "3"), ("cb", "4")]);
        apply(&r, &mut l);
        assert_eq!(l, labels(&[("b1", "2"), ("b2", "3")]));
    }

    #[test]
    fn invalid_rules_are_refused() {
        for (yaml, why) in [
            (
                "- action: replace\n  source_labels: [a]\n",
                "requires `target_label`",
            ),
            (
                "- action: hashmod\n  target_label: a\n",
                "non-zero `modulus`",
            ),
            ("- regex: '('\n  target_label: a\n", "invalid regex"),
            (
                "- action: lowercase\n  source_labels: [a]\n  target_label: b\n",
                "not supported yet",
            ),
            ("- action: labeldrop\n  source_labels: [a]\n", "not allowed"),
        ] {
            let node = crate::config::node::parse("t.yaml", yaml).unwrap();
            let configs: Vec<RelabelConfig> = crate::config::node::from_node(&node, "r").unwrap();
            let e = compile_all(&configs).unwrap_err();
            assert!(e.contains(why), "{yaml}: {e}");
        }
    }
}
