//! `header-rules`: Postfix `header_checks` as a policy.
//!
//! An ordered list of rules, each a header field name (or `*` for every
//! field), a regular expression and an action, checked at the data stage:
//!
//! | action | effect | more rules? |
//! | --- | --- | --- |
//! | `reject` | refuse the message: `code status text` (default `550 5.7.1 Message content rejected`; a 4xx `code` refuses temporarily) | no: first match wins |
//! | `discard` | say 250, drop the message | no |
//! | `quarantine` | say 250, keep the message in quarantine with `text` as the reason | no |
//! | `add_header` | add the field `add = "Name: value"` | yes: these accumulate |
//! | `remove_header` | remove every field called `remove` (default: the matched field's name) | yes |
//!
//! A rule naming a header matches when its pattern matches the value of
//! one of the fields with that name (case-insensitive name); a `*` rule
//! matches against whole fields, `Name: value`, like Postfix. Each value is
//! tried both decoded (RFC 2047 encoded-words as text, unfolded) and raw
//! (as sent, unfolded), so `(?i)viagra` finds an encoded Subject and
//! `=\?utf-8\?b\?` finds the encoding itself. A rule fires at most once per
//! message. Changes from `add_header`/`remove_header` rules that matched
//! before a `quarantine` still apply; a `reject` or `discard` makes them moot.
//!
//! Patterns use the syntax of the `regex-lite` crate (the syntax of
//! `regex`, with ASCII-only case folding and `\w`/`\d`/`\s`, and no
//! `\p{..}` classes); matching takes linear time, whatever the pattern.
//!
//! See the crate's README for the configuration keys and an example.

#![warn(missing_docs)]

use regex_lite::{Regex, RegexBuilder};
use sluice_guest::{
    Config, ConfigError, Context, DataResult, Envelope, Message, Policy, Session, Stage, Verdict,
};

/// Most header fields read from a message.
const MAX_HEADERS: u32 = 1000;
/// Most rules.
const MAX_RULES: usize = 1000;
/// Longest pattern, in octets.
const MAX_PATTERN: usize = 4096;
/// Most memory one compiled pattern may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Reject {
        code: u16,
        status: String,
        text: String,
    },
    Discard,
    Quarantine(String),
    AddHeader {
        name: String,
        value: String,
    },
    /// `None`: the name of the field that matched.
    RemoveHeader(Option<String>),
}

impl Action {
    fn as_str(&self) -> &'static str {
        match self {
            Action::Reject { .. } => "reject",
            Action::Discard => "discard",
            Action::Quarantine(_) => "quarantine",
            Action::AddHeader { .. } => "add_header",
            Action::RemoveHeader(_) => "remove_header",
        }
    }
}

/// One rule.
#[derive(Debug, Clone)]
struct Rule {
    /// Lower-case field name; `None` for `*`.
    header: Option<String>,
    regex: Regex,
    action: Action,
}

/// The `header-rules` policy: see the crate documentation.
#[derive(Debug, Clone)]
pub struct HeaderRules {
    rules: Vec<Rule>,
    /// The field names the rules look at (lower case), when every rule
    /// names one: only those are read from the message and decoded.
    /// `None`: some rule looks at every field.
    names: Option<Vec<String>>,
}

/// The keys of the `[policy.config]` table.
const KEYS: &[&str] = &["rules"];
/// The keys of one rule.
const RULE_KEYS: &[&str] = &[
    "header", "pattern", "action", "text", "code", "status", "add", "remove",
];

/// A header field name: printable ASCII without `:` (RFC 5322 ftext).
fn valid_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// One line of text, for a reply or a reason.
fn one_line(text: &str) -> bool {
    !text.contains(['\r', '\n'])
}

/// Parse one rule; errors name `rules[index].key`.
fn parse_rule(index: usize, rule: &Config) -> Result<Rule, String> {
    let at = |e: ConfigError| -> String {
        e.to_string()
            .replacen("config key `", &format!("config key `rules[{index}]."), 1)
    };
    let key = |k: &str| format!("config key `rules[{index}].{k}`");
    rule.check_keys(RULE_KEYS).map_err(at)?;
    let header = rule.str("header").map_err(at)?.ok_or_else(|| {
        format!(
            "{} is required: a header field name, or \"*\" for every field",
            key("header")
        )
    })?;
    let header = match header.trim() {
        "*" => None,
        name if valid_field_name(name) => Some(name.to_ascii_lowercase()),
        name => {
            return Err(format!(
                "{}: {name:?} is not a header field name or \"*\"",
                key("header")
            ));
        }
    };
    let pattern = rule
        .str("pattern")
        .map_err(at)?
        .ok_or_else(|| format!("{} is required: a regular expression", key("pattern")))?;
    if pattern.len() > MAX_PATTERN {
        return Err(format!(
            "{}: longer than {MAX_PATTERN} octets",
            key("pattern")
        ));
    }
    let regex = RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            format!(
                "{}: {pattern:?} is not a valid regular expression: {e}",
                key("pattern")
            )
        })?;
    let text = rule.str("text").map_err(at)?;
    if let Some(text) = text
        && !one_line(text)
    {
        return Err(format!("{}: must be one line", key("text")));
    }
    let action_name = rule
        .str("action")
        .map_err(at)?
        .ok_or_else(|| format!("{} is required", key("action")))?;
    // Keys that only some actions take.
    let only = |k: &str, action: &str| -> Result<(), String> {
        if rule.contains(k) && action_name != action {
            Err(format!("{}: only an `{action}` rule takes it", key(k)))
        } else {
            Ok(())
        }
    };
    only("code", "reject")?;
    only("status", "reject")?;
    only("add", "add_header")?;
    only("remove", "remove_header")?;
    let action = match action_name {
        "reject" => {
            let code = rule.u32("code").map_err(at)?.unwrap_or(550);
            let code = match u16::try_from(code) {
                Ok(c) if (400..=599).contains(&c) => c,
                _ => {
                    return Err(format!(
                        "{}: {code} is not a 4xx or 5xx reply code",
                        key("code")
                    ));
                }
            };
            let class = (code / 100).to_string();
            let status = rule
                .str("status")
                .map_err(at)?
                .map(str::to_string)
                .unwrap_or_else(|| format!("{class}.7.1"));
            let parts: Vec<&str> = status.split('.').collect();
            let ok = parts.len() == 3
                && parts[0] == class
                && parts.iter().all(|p| {
                    !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())
                });
            if !ok {
                return Err(format!(
                    "{}: {status:?} is not an enhanced status code of class {class} (like \"{class}.7.1\")",
                    key("status")
                ));
            }
            Action::Reject {
                code,
                status,
                text: text.unwrap_or("Message content rejected").to_string(),
            }
        }
        "discard" => Action::Discard,
        "quarantine" => Action::Quarantine(
            text.map(str::to_string)
                .unwrap_or_else(|| format!("header rule {index} matched")),
        ),
        "add_header" => {
            let add = rule.str("add").map_err(at)?.ok_or_else(|| {
                format!("{} is required for add_header: \"Name: value\"", key("add"))
            })?;
            let (name, value) = add
                .split_once(':')
                .ok_or_else(|| format!("{}: {add:?} is not \"Name: value\"", key("add")))?;
            let name = name.trim();
            if !valid_field_name(name) || !one_line(value) {
                return Err(format!(
                    "{}: {add:?} is not \"Name: value\" on one line",
                    key("add")
                ));
            }
            Action::AddHeader {
                name: name.to_string(),
                value: value.trim().to_string(),
            }
        }
        "remove_header" => {
            let remove = rule.str("remove").map_err(at)?;
            if let Some(name) = remove
                && !valid_field_name(name)
            {
                return Err(format!(
                    "{}: {name:?} is not a header field name",
                    key("remove")
                ));
            }
            Action::RemoveHeader(remove.map(str::to_string))
        }
        other => {
            return Err(format!(
                "{}: {other:?} is not \"reject\", \"discard\", \"quarantine\", \"add_header\" or \"remove_header\"",
                key("action")
            ));
        }
    };
    Ok(Rule {
        header,
        regex,
        action,
    })
}

/// A header field of the message: its name, raw value and decoded value.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    raw: String,
    decoded: String,
}

/// The header fields of a message, with decoded values (one `header`
/// call per distinct name): every field, or only those named in `names`
/// (lower case).
fn fields(message: &Message<'_>, names: Option<&[String]>) -> Vec<Field> {
    let raw = message.headers(MAX_HEADERS);
    // The decoded values of each name met so far, in order (few names:
    // a list beats a map).
    let mut decoded: Vec<(String, std::vec::IntoIter<String>)> = Vec::new();
    raw.into_iter()
        .filter_map(|h| {
            if names.is_some_and(|n| !n.iter().any(|n| n.eq_ignore_ascii_case(&h.name))) {
                return None;
            }
            let at = match decoded
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(&h.name))
            {
                Some(i) => i,
                None => {
                    decoded.push((h.name.clone(), message.header(&h.name).into_iter()));
                    decoded.len() - 1
                }
            };
            let value = match decoded[at].1.next() {
                Some(v) => v,
                None => h.value.clone(),
            };
            Some(Field {
                name: h.name,
                raw: h.value,
                decoded: value,
            })
        })
        .collect()
}

impl Rule {
    /// The first field this rule matches.
    fn first_match<'a>(&self, fields: &'a [Field]) -> Option<&'a Field> {
        fields.iter().find(|f| match &self.header {
            Some(name) => {
                f.name.eq_ignore_ascii_case(name)
                    && (self.regex.is_match(&f.decoded)
                        || (f.raw != f.decoded && self.regex.is_match(&f.raw)))
            }
            None => {
                self.regex.is_match(&format!("{}: {}", f.name, f.decoded))
                    || (f.raw != f.decoded
                        && self.regex.is_match(&format!("{}: {}", f.name, f.raw)))
            }
        })
    }
}

/// "rule 0 (subject ~ (?i)viagra) matched Subject: reject", the log line
/// of a match. Pieced together rather than `format!`ed: the formatting
/// machinery is several KiB of code that every matching message (an
/// `add_header` rule matches all of them) would pull into the cache.
fn match_line(index: usize, rule: &Rule, field: &str) -> String {
    let header = rule.header.as_deref().unwrap_or("*");
    let (pattern, action) = (rule.regex.as_str(), rule.action.as_str());
    let mut line = String::with_capacity(40 + header.len() + pattern.len() + field.len());
    line.push_str("rule ");
    sluice_guest::push_decimal(&mut line, index as u64);
    for piece in [
        " (",
        header,
        " ~ ",
        pattern,
        ") matched ",
        field,
        ": ",
        action,
    ] {
        line.push_str(piece);
    }
    line
}

impl HeaderRules {
    /// Apply the rules to the fields of a message.
    fn apply(&self, ctx: &Context, fields: &[Field]) -> DataResult {
        let mut result = DataResult::continue_();
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(field) = rule.first_match(fields) else {
                continue;
            };
            ctx.info(&match_line(index, rule, &field.name));
            let _ = ctx.counter_add("matched", 1);
            match &rule.action {
                Action::Reject { code, status, text } if *code < 500 => {
                    return DataResult::tempfail(*code, status.clone(), text.clone());
                }
                Action::Reject { code, status, text } => {
                    return DataResult::reject(*code, status.clone(), text.clone());
                }
                Action::Discard => return DataResult::discard(),
                Action::Quarantine(reason) => {
                    return result.with_verdict(Verdict::quarantine(reason.clone()));
                }
                Action::AddHeader { name, value } => {
                    result = result.add_header(name.clone(), value.clone());
                }
                Action::RemoveHeader(name) => {
                    let name = name.clone().unwrap_or_else(|| field.name.clone());
                    result = result.remove_header(name);
                }
            }
        }
        result
    }
}

impl Policy for HeaderRules {
    fn name() -> &'static str {
        "header-rules"
    }

    fn stages() -> &'static [Stage] {
        &[Stage::Data]
    }

    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KEYS)?;
        let items = match config.get("rules") {
            None => Vec::new(),
            Some(value) if value.is_null() => Vec::new(),
            Some(value) => value
                .as_array()
                .ok_or("config key `rules`: expected a list of tables ([[policy.config.rules]])")?
                .clone(),
        };
        if items.len() > MAX_RULES {
            return Err(format!("config key `rules`: at most {MAX_RULES} rules"));
        }
        let rules = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let rule = Config::from_value(item)
                    .map_err(|_| format!("config key `rules[{index}]`: expected a table"))?;
                parse_rule(index, &rule)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Option<Vec<String>> = rules
            .iter()
            .map(|r| r.header.as_ref().map(|h| h.to_ascii_lowercase()))
            .collect();
        if let Some(n) = &mut names {
            n.sort();
            n.dedup();
        }
        Ok(HeaderRules { rules, names })
    }

    fn on_data(
        &self,
        ctx: &Context,
        _session: &Session,
        _envelope: &Envelope,
        message: &Message<'_>,
    ) -> DataResult {
        if self.rules.is_empty() {
            return DataResult::continue_();
        }
        self.apply(ctx, &fields(message, self.names.as_deref()))
    }
}

sluice_guest::export_policy!(HeaderRules);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::{Change, Header, MockHost, MockMessage};

    fn policy(json: &str) -> HeaderRules {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        HeaderRules::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn init_err(json: &str) -> String {
        let config = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        match HeaderRules::init(&config) {
            Ok(p) => panic!("expected an error, got {p:?}"),
            Err(e) => e,
        }
    }

    fn run(p: &HeaderRules, message: &str) -> (DataResult, MockHost) {
        let host = MockHost::new();
        let mock = MockMessage::parse(message.replace('\n', "\r\n"));
        let r = p.on_data(
            &host.context(),
            &Session::default(),
            &Envelope::default(),
            &mock.message(),
        );
        (r, host)
    }

    const SPAM: &str = "From: a@example.com\nSubject: Cheap VIAGRA now\nX-Mailer: BulkMailer 2.0\nX-Spam-Score: 3\n\nbuy\n";
    const HAM: &str = "From: a@example.com\nSubject: lunch?\nX-Mailer: Thunderbird\n\nhi\n";

    #[test]
    fn reject_on_subject() {
        let p = policy(
            r#"{"rules": [{"header": "Subject", "pattern": "(?i)viagra", "action": "reject"}]}"#,
        );
        let (r, host) = run(&p, SPAM);
        assert_eq!(
            r,
            DataResult::reject(550, "5.7.1", "Message content rejected")
        );
        assert!(host.logged("rule 0 (subject ~ (?i)viagra) matched Subject: reject"));
        assert_eq!(run(&p, HAM).0, DataResult::continue_());
    }

    #[test]
    fn custom_reject_reply_and_tempfail() {
        let p = policy(
            r#"{"rules": [{"header": "subject", "pattern": "viagra", "action": "reject",
                "code": 554, "status": "5.7.0", "text": "no pills"}]}"#,
        );
        assert_eq!(
            run(&p, SPAM).0,
            DataResult::continue_(),
            "case-sensitive without (?i)"
        );
        let p = policy(
            r#"{"rules": [{"header": "subject", "pattern": "VIAGRA", "action": "reject",
                "code": 451, "text": "later"}]}"#,
        );
        assert_eq!(run(&p, SPAM).0, DataResult::tempfail(451, "4.7.1", "later"));
    }

    #[test]
    fn first_match_wins_for_final_actions() {
        let p = policy(
            r#"{"rules": [
                {"header": "X-Mailer", "pattern": "Bulk", "action": "discard"},
                {"header": "Subject", "pattern": "(?i)viagra", "action": "reject"}
            ]}"#,
        );
        assert_eq!(run(&p, SPAM).0, DataResult::discard());
        let p = policy(
            r#"{"rules": [
                {"header": "Subject", "pattern": "(?i)viagra", "action": "quarantine", "text": "pills"},
                {"header": "X-Mailer", "pattern": "Bulk", "action": "reject"}
            ]}"#,
        );
        assert_eq!(run(&p, SPAM).0, DataResult::quarantine("pills"));
    }

    #[test]
    fn add_and_remove_accumulate_and_survive_quarantine() {
        let p = policy(
            r#"{"rules": [
                {"header": "X-Mailer", "pattern": "Bulk", "action": "add_header", "add": "X-Flag: bulk"},
                {"header": "X-Spam-Score", "pattern": ".", "action": "remove_header"},
                {"header": "*", "pattern": "^X-Mailer:", "action": "remove_header", "remove": "X-Originating-IP"},
                {"header": "Subject", "pattern": "(?i)viagra", "action": "add_header", "add": "X-Flag:spam"},
                {"header": "Subject", "pattern": "(?i)cheap", "action": "quarantine"},
                {"header": "Subject", "pattern": ".", "action": "add_header", "add": "X-Never: reached"}
            ]}"#,
        );
        let (r, _) = run(&p, SPAM);
        assert_eq!(r.verdict, Verdict::quarantine("header rule 4 matched"));
        assert_eq!(
            r.changes,
            vec![
                Change::AddHeader(Header::new("X-Flag", "bulk")),
                Change::RemoveHeader("X-Spam-Score".into()),
                Change::RemoveHeader("X-Originating-IP".into()),
                Change::AddHeader(Header::new("X-Flag", "spam")),
            ]
        );
        let (r, _) = run(&p, HAM);
        assert_eq!(
            r,
            DataResult::continue_()
                .remove_header("X-Originating-IP")
                .add_header("X-Never", "reached")
        );
    }

    #[test]
    fn only_the_named_fields_are_read_unless_a_rule_looks_at_all() {
        let p = policy(
            r#"{"rules": [{"header": "Subject", "pattern": "a", "action": "discard"},
                          {"header": "from", "pattern": "b", "action": "discard"},
                          {"header": "SUBJECT", "pattern": "c", "action": "discard"}]}"#,
        );
        assert_eq!(
            p.names,
            Some(vec!["from".to_string(), "subject".to_string()])
        );
        let p = policy(
            r#"{"rules": [{"header": "Subject", "pattern": "a", "action": "discard"},
                          {"header": "*", "pattern": "b", "action": "discard"}]}"#,
        );
        assert_eq!(p.names, None);
    }

    #[test]
    fn star_rules_match_whole_fields() {
        let p = policy(
            r#"{"rules": [{"header": "*", "pattern": "(?i)^x-mailer: bulk", "action": "reject"}]}"#,
        );
        assert!(matches!(run(&p, SPAM).0.verdict, Verdict::Reject(_)));
        assert_eq!(run(&p, HAM).0, DataResult::continue_());
        // A named rule sees only the value.
        let p = policy(
            r#"{"rules": [{"header": "X-Mailer", "pattern": "^X-Mailer", "action": "reject"}]}"#,
        );
        assert_eq!(run(&p, SPAM).0, DataResult::continue_());
    }

    #[test]
    fn the_log_line_names_the_rule_its_pattern_and_the_field() {
        // Ten rules that never match, then a star rule that does.
        let never = r#"{"header": "Subject", "pattern": "^never$", "action": "reject"}"#;
        let mut rules = vec![never; 10];
        rules.push(r#"{"header": "*", "pattern": "(?i)^x-mailer: bulk", "action": "reject"}"#);
        let p = policy(&format!(r#"{{"rules": [{}]}}"#, rules.join(",")));
        let (_, host) = run(&p, SPAM);
        let line = "rule 10 (* ~ (?i)^x-mailer: bulk) matched X-Mailer: reject";
        assert!(host.logged(line), "{:?}", host.logs());
    }

    #[test]
    fn decoded_and_raw_values_both_match() {
        let msg = "From: a@example.com\nSubject: =?utf-8?B?Q2hlYXAgVklBR1JB?=\n\nx\n";
        let p = policy(
            r#"{"rules": [{"header": "Subject", "pattern": "(?i)viagra", "action": "reject"}]}"#,
        );
        assert!(
            matches!(run(&p, msg).0.verdict, Verdict::Reject(_)),
            "decoded"
        );
        let p = policy(
            r#"{"rules": [{"header": "Subject", "pattern": "^=\\?utf-8\\?B\\?", "action": "discard"}]}"#,
        );
        assert_eq!(run(&p, msg).0, DataResult::discard(), "raw");
    }

    #[test]
    fn every_field_of_a_repeated_header_is_checked() {
        let msg = "Received: from a\nReceived: from evil.example\nSubject: x\n\nx\n";
        let p = policy(
            r#"{"rules": [{"header": "received", "pattern": "evil\\.example", "action": "discard"}]}"#,
        );
        assert_eq!(run(&p, msg).0, DataResult::discard());
    }

    #[test]
    fn folded_values_are_unfolded() {
        let msg = "Subject: cheap\n  viagra\n\nx\n";
        let p = policy(
            r#"{"rules": [{"header": "Subject", "pattern": "cheap\\s+viagra", "action": "discard"}]}"#,
        );
        assert_eq!(run(&p, msg).0, DataResult::discard());
    }

    #[test]
    fn no_rules_no_changes() {
        let p = policy("{}");
        let (r, host) = run(&p, SPAM);
        assert_eq!(r, DataResult::continue_());
        assert!(host.calls().is_empty());
    }

    #[test]
    fn bad_configs_name_the_key() {
        let e = init_err(r#"{"rule": []}"#);
        assert!(e.contains("`rule` is not known"), "{e}");
        let e = init_err(r#"{"rules": {"header": "Subject"}}"#);
        assert!(e.contains("config key `rules`"), "{e}");
        let e = init_err(r#"{"rules": ["Subject"]}"#);
        assert!(e.contains("config key `rules[0]`: expected a table"), "{e}");
        let ok = r#"{"header": "Subject", "pattern": "x", "action": "discard"}"#;
        let e = init_err(&format!(
            r#"{{"rules": [{ok}, {{"pattern": "x", "action": "discard"}}]}}"#
        ));
        assert!(
            e.contains("config key `rules[1].header` is required"),
            "{e}"
        );
        let e =
            init_err(r#"{"rules": [{"header": "Sub ject", "pattern": "x", "action": "discard"}]}"#);
        assert!(e.contains("`rules[0].header`"), "{e}");
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "(unclosed", "action": "discard"}]}"#,
        );
        assert!(
            e.contains("`rules[0].pattern`") && e.contains("not a valid regular expression"),
            "{e}"
        );
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "\\p{Greek}", "action": "discard"}]}"#,
        );
        assert!(e.contains("`rules[0].pattern`"), "{e}");
        let e =
            init_err(r#"{"rules": [{"header": "Subject", "pattern": 5, "action": "discard"}]}"#);
        assert!(
            e.contains("config key `rules[0].pattern`: expected a string"),
            "{e}"
        );
        let e = init_err(r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "drop"}]}"#);
        assert!(e.contains("`rules[0].action`"), "{e}");
        let e = init_err(r#"{"rules": [{"header": "Subject", "pattern": "x"}]}"#);
        assert!(e.contains("`rules[0].action` is required"), "{e}");
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "add_header"}]}"#,
        );
        assert!(e.contains("`rules[0].add` is required"), "{e}");
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "add_header", "add": "no colon"}]}"#,
        );
        assert!(e.contains("`rules[0].add`"), "{e}");
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "discard", "add": "X: y"}]}"#,
        );
        assert!(
            e.contains("`rules[0].add`: only an `add_header` rule"),
            "{e}"
        );
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "reject", "code": 250}]}"#,
        );
        assert!(e.contains("`rules[0].code`"), "{e}");
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "reject", "status": "4.7.1"}]}"#,
        );
        assert!(e.contains("`rules[0].status`"), "{e}");
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "reject", "text": "a\nb"}]}"#,
        );
        assert!(e.contains("`rules[0].text`"), "{e}");
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "discard", "when": 1}]}"#,
        );
        assert!(e.contains("config key `rules[0].when` is not known"), "{e}");
        let e = init_err(
            r#"{"rules": [{"header": "Subject", "pattern": "x", "action": "remove_header", "remove": "A B"}]}"#,
        );
        assert!(e.contains("`rules[0].remove`"), "{e}");
    }

    #[test]
    fn huge_patterns_are_refused() {
        let big = format!(
            r#"{{"rules": [{{"header": "Subject", "pattern": "{}", "action": "discard"}}]}}"#,
            "a".repeat(MAX_PATTERN + 1)
        );
        assert!(init_err(&big).contains("longer than"));
        // Within the length limit but over the compiled-size limit.
        let blowup = r#"{"rules": [{"header": "Subject", "pattern": "(((a{100}){100}){100})", "action": "discard"}]}"#;
        assert!(init_err(blowup).contains("`rules[0].pattern`"));
    }
}
