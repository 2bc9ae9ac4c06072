"""Unit tests of header_rules.py against the SDK's mock host (no WebAssembly):
the same cases as the Rust policy's tests."""

import json

import pytest
from header_rules import HeaderRules
from sluice_policy import Config, ConfigError, DataResult, Envelope, Session, Verdict
from sluice_policy.mock import MockHost, MockMessage

SPAM = "From: a@example.com\nSubject: Cheap VIAGRA now\nX-Mailer: BulkMailer 2.0\nX-Spam-Score: 3\n\nbuy\n"
HAM = "From: a@example.com\nSubject: lunch?\nX-Mailer: Thunderbird\n\nhi\n"


def policy(*rules):
    return HeaderRules(Config({"rules": list(rules)}))


def run(p, message):
    host = MockHost()
    r = p.on_data(host.context(), Session(), Envelope(), MockMessage.parse(message).message())
    return r, host


def init_err(config):
    with pytest.raises(ConfigError) as e:
        HeaderRules(Config.from_json(json.dumps(config)))
    return str(e.value)


def test_reject_on_subject():
    p = policy({"header": "Subject", "pattern": "(?i)viagra", "action": "reject"})
    r, host = run(p, SPAM)
    assert r == DataResult.reject(550, "5.7.1", "Message content rejected")
    assert host.logged("rule 0 (subject ~ (?i)viagra) matched Subject: reject")
    assert run(p, HAM)[0] == DataResult()


def test_custom_reject_reply_and_tempfail():
    p = policy({"header": "subject", "pattern": "viagra", "action": "reject", "code": 554, "status": "5.7.0", "text": "no pills"})
    assert run(p, SPAM)[0] == DataResult(), "case-sensitive without (?i)"
    p = policy({"header": "subject", "pattern": "VIAGRA", "action": "reject", "code": 451, "text": "later"})
    assert run(p, SPAM)[0] == DataResult.tempfail(451, "4.7.1", "later")


def test_first_match_wins_for_final_actions():
    p = policy(
        {"header": "X-Mailer", "pattern": "Bulk", "action": "discard"},
        {"header": "Subject", "pattern": "(?i)viagra", "action": "reject"},
    )
    assert run(p, SPAM)[0] == DataResult.discard()
    p = policy(
        {"header": "Subject", "pattern": "(?i)viagra", "action": "quarantine", "text": "pills"},
        {"header": "X-Mailer", "pattern": "Bulk", "action": "reject"},
    )
    assert run(p, SPAM)[0] == DataResult.quarantine("pills")


def test_add_and_remove_accumulate_and_survive_quarantine():
    p = policy(
        {"header": "X-Mailer", "pattern": "Bulk", "action": "add_header", "add": "X-Flag: bulk"},
        {"header": "X-Spam-Score", "pattern": ".", "action": "remove_header"},
        {"header": "*", "pattern": "^X-Mailer:", "action": "remove_header", "remove": "X-Originating-IP"},
        {"header": "Subject", "pattern": "(?i)viagra", "action": "add_header", "add": "X-Flag:spam"},
        {"header": "Subject", "pattern": "(?i)cheap", "action": "quarantine"},
        {"header": "Subject", "pattern": ".", "action": "add_header", "add": "X-Never: reached"},
    )
    r, _ = run(p, SPAM)
    assert r == (
        DataResult.quarantine("header rule 4 matched")
        .add_header("X-Flag", "bulk")
        .remove_header("X-Spam-Score")
        .remove_header("X-Originating-IP")
        .add_header("X-Flag", "spam")
    )
    assert run(p, HAM)[0] == DataResult().remove_header("X-Originating-IP").add_header("X-Never", "reached")


def test_star_rules_match_whole_fields():
    p = policy({"header": "*", "pattern": "(?i)^x-mailer: bulk", "action": "reject"})
    assert run(p, SPAM)[0].verdict.kind == "reject"
    assert run(p, HAM)[0] == DataResult()
    p = policy({"header": "X-Mailer", "pattern": "^X-Mailer", "action": "reject"})
    assert run(p, SPAM)[0] == DataResult(), "a named rule sees only the value"


def test_decoded_and_raw_values_both_match():
    msg = "From: a@example.com\nSubject: =?utf-8?B?Q2hlYXAgVklBR1JB?=\n\nx\n"
    p = policy({"header": "Subject", "pattern": "(?i)viagra", "action": "reject"})
    assert run(p, msg)[0].verdict.kind == "reject", "decoded"
    p = policy({"header": "Subject", "pattern": "^=\\?utf-8\\?B\\?", "action": "discard"})
    assert run(p, msg)[0] == DataResult.discard(), "raw"


def test_repeated_and_folded_headers():
    msg = "Received: from a\nReceived: from evil.example\nSubject: cheap\n  viagra\n\nx\n"
    p = policy({"header": "received", "pattern": "evil\\.example", "action": "discard"})
    assert run(p, msg)[0] == DataResult.discard()
    p = policy({"header": "Subject", "pattern": "cheap\\s+viagra", "action": "discard"})
    assert run(p, msg)[0] == DataResult.discard()


def test_ascii_classes_like_regex_lite():
    msg = "Subject: Gr\u00fc\u00dfe\n\nx\n"
    # regex-lite's \w is ASCII: "ü" is not a word character.
    p = policy({"header": "Subject", "pattern": "^\\w+$", "action": "discard"})
    assert run(p, msg)[0] == DataResult()
    p = policy({"header": "Subject", "pattern": "Gr\u00fc\u00dfe", "action": "discard"})
    assert run(p, msg)[0] == DataResult.discard()


def test_no_rules_no_calls():
    r, host = run(policy(), SPAM)
    assert r == DataResult()
    assert host.calls() == []


def test_metrics_counted_when_granted():
    p = policy({"header": "Subject", "pattern": "lunch", "action": "add_header", "add": "X-A: b"})
    host = MockHost().grant("metrics")
    p.on_data(host.context(), Session(), Envelope(), MockMessage.parse(HAM).message())
    assert host.counter("matched") == 1


def test_bad_configs_name_the_key():
    ok = {"header": "Subject", "pattern": "x", "action": "discard"}
    assert "`rule` is not known" in init_err({"rule": []})
    assert "config key `rules`" in init_err({"rules": {"header": "Subject"}})
    assert "config key `rules[0]`: expected a table" in init_err({"rules": ["Subject"]})
    assert "config key `rules[1].header` is required" in init_err({"rules": [ok, {"pattern": "x", "action": "discard"}]})
    assert "`rules[0].header`" in init_err({"rules": [{**ok, "header": "Sub ject"}]})
    e = init_err({"rules": [{**ok, "pattern": "(unclosed"}]})
    assert "`rules[0].pattern`" in e and "not a valid regular expression" in e
    assert "config key `rules[0].pattern`: expected a string" in init_err({"rules": [{**ok, "pattern": 5}]})
    assert "`rules[0].action`" in init_err({"rules": [{**ok, "action": "drop"}]})
    assert "`rules[0].action` is required" in init_err({"rules": [{"header": "Subject", "pattern": "x"}]})
    assert "`rules[0].add` is required" in init_err({"rules": [{**ok, "action": "add_header"}]})
    assert "`rules[0].add`" in init_err({"rules": [{**ok, "action": "add_header", "add": "no colon"}]})
    assert "`rules[0].add`: only an `add_header` rule" in init_err({"rules": [{**ok, "add": "X: y"}]})
    assert "`rules[0].code`" in init_err({"rules": [{**ok, "action": "reject", "code": 250}]})
    assert "`rules[0].status`" in init_err({"rules": [{**ok, "action": "reject", "status": "4.7.1"}]})
    assert "`rules[0].text`" in init_err({"rules": [{**ok, "action": "reject", "text": "a\nb"}]})
    assert "config key `rules[0].when` is not known" in init_err({"rules": [{**ok, "when": 1}]})
    assert "`rules[0].remove`" in init_err({"rules": [{**ok, "action": "remove_header", "remove": "A B"}]})
    assert "longer than" in init_err({"rules": [{**ok, "pattern": "a" * 4097}]})
