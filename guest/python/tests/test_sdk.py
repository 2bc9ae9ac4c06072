"""Tests of the Python SDK itself: values, config, mock host, mock message."""

import pytest
from sluice_policy import (
    AccessDenied, Config, ConfigError, DataResult, Envelope, InvalidArgument, Level, Param, Policy,
    Route, Session, Stage, Temporary, Timestamp, TlsMode, Verdict, export_policy,
)
from sluice_policy.message import truncate_utf8
from sluice_policy.mock import MOCK_START, MockHost, MockMessage


def test_verdicts_and_results_compare_by_value():
    assert Verdict.reject(550, "5.7.1", "no") == Verdict.reject(550, "5.7.1", "no")
    assert Verdict.CONTINUE.is_continue and not Verdict.ACCEPT.is_continue
    r = DataResult.quarantine("spam").add_recipient("audit@example.com").with_verdict(Verdict.ACCEPT)
    assert r.verdict == Verdict.ACCEPT
    assert [c.kind for c in r.changes] == ["add-recipient"]
    assert DataResult().changes == ()
    assert Route.relay("smtp.example", 587, TlsMode.REQUIRE).relay_host.port == 587
    assert Route.DEFAULT.kind == "default" and Route.mx("a.example").domain == "a.example"
    assert str(Stage.MAIL_FROM) == "mail-from"


def test_session_envelope_param_helpers():
    assert Session(client_ip="2001:db8::7").ip().version == 6
    assert Session(client_ip="nope").ip() is None
    assert Envelope().is_null_sender
    assert Param.find([Param("SIZE", "10"), Param("BODY", "8BITMIME")], "size") == "10"
    assert Param.find([], "SIZE") is None


def test_config_getters_and_errors():
    c = Config.from_json('{"s": "x", "l": ["a"], "n": 7, "b": false, "t": {"inner": {"deep": 1}}, "null": null}')
    assert c.str("s") == "x" and c.list_str("l") == ["a"] and c.u32("n") == 7 and c.bool("b") is False
    assert c.str("null") is None and not c.contains("null") and c.str("absent") is None
    with pytest.raises(ConfigError, match=r"config key `n`: expected a string, found a number"):
        c.str("n")
    with pytest.raises(ConfigError, match=r"config key `t.inner.deep`: expected a string"):
        c.table("t").table("inner").str("deep")
    with pytest.raises(ConfigError, match=r"config key `treshold` is not known \(known: zone, threshold\)"):
        Config({"zone": "a", "treshold": 2}).check_keys(["zone", "threshold"])
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.from_json("{")
    with pytest.raises(ConfigError, match="must be a table"):
        Config.from_json("[1]")
    with pytest.raises(ConfigError):
        Config({"n": -1}).u32("n")
    assert Config.from_json("").is_empty()


def test_mock_host_grants_kv_and_clock():
    host = MockHost().grant("kv")
    ctx = host.context()
    assert ctx.kv_incr("k", 1, 300) == 1
    assert ctx.kv_incr("k", 1, 300) == 2
    assert ctx.kv_get("k") == b"2"
    host.advance(300)
    assert ctx.kv_get("k") is None
    ctx.kv_set("s", "text")
    with pytest.raises(InvalidArgument):
        ctx.kv_incr("s", 1)
    with pytest.raises(InvalidArgument):
        ctx.kv_get("")
    with pytest.raises(AccessDenied):
        ctx.now()
    host.grant("clock")
    assert ctx.now() == Timestamp(MOCK_START.seconds + 300, 0)
    ctx.info("checked")
    assert host.logs() == [(Level.INFO, "checked")]
    assert "kv.incr k 1 300" in host.calls()


def test_mock_host_dns_and_metrics():
    host = MockHost().grant_all().dns_a("2.0.0.127.Zen.Example.", ["127.0.0.2"]).dns_mx("a.example", [(10, "mx.a.example")])
    host.dns_error("down.example", Temporary("SERVFAIL"))
    ctx = host.context()
    assert ctx.dns_a("2.0.0.127.zen.example") == ["127.0.0.2"]
    assert ctx.dns_a("none.example") == []
    assert ctx.dns_mx("a.example")[0].exchange == "mx.a.example"
    with pytest.raises(Temporary) as e:
        ctx.dns_txt("down.example")
    assert e.value.is_temporary
    with pytest.raises(InvalidArgument):
        ctx.dns_a("bad..name")
    with pytest.raises(InvalidArgument):
        ctx.dns_ptr("not-an-ip")
    ctx.counter_add("hits", 2)
    assert host.counter("hits") == 2
    with pytest.raises(InvalidArgument):
        ctx.counter_add("Bad-Name")
    assert AccessDenied() == AccessDenied() and str(AccessDenied()).startswith("access denied")


def test_mock_message():
    m = MockMessage.parse(
        "From: =?utf-8?q?J=C3=B6rg?= <j@example.com>\n"
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
        "To: a@example.com, B <b@example.com>\nCc: c@example.com\n"
        "X-Long: one\n two\n\nHello\n"
    ).message()
    assert m.subject() == "Grüße"
    assert m.header("from") == ["Jörg <j@example.com>"]
    assert m.from_() == ["j@example.com"]
    assert m.to() == ["a@example.com", "b@example.com", "c@example.com"]
    assert m.headers(10)[1].value == "=?utf-8?q?Gr=C3=BC=C3=9Fe?="
    assert m.first_header("x-long") == "one two"
    assert m.text(3) == "Hel"
    assert m.raw(0, 5) == b"From:"
    assert m.size() > 0
    assert m.parts(10)[0].content_type == "text/plain"


def test_truncation():
    assert truncate_utf8("héllo", 2) == "h"
    assert truncate_utf8("héllo", 3) == "hé"
    assert truncate_utf8("abc", 10) == "abc"


def test_export_policy_checks_the_class():
    with pytest.raises(TypeError):
        export_policy(object)

    class Nameless(Policy):
        stages = [Stage.DATA]

    with pytest.raises(TypeError, match="name"):
        export_policy(Nameless)

    class Defaults(Policy):
        name = "defaults"
        stages = [Stage.CONNECT]

    p = Defaults(Config())
    ctx = MockHost().context()
    assert p.on_connect(ctx, Session()) == Verdict.CONTINUE
    assert p.on_data(ctx, Session(), Envelope(), MockMessage.parse("a: b\n\nc").message()) == DataResult()
    assert p.on_route(ctx, Envelope(), "a@b.example") == Route.DEFAULT


def test_configured_stages_default_to_every_stage_and_can_narrow():
    class Both(Policy):
        name = "both"
        stages = [Stage.CONNECT, Stage.RCPT]

    class OnlyRcpt(Both):
        def configured_stages(self):
            return [Stage.RCPT] if self.config.get("rcpt_only") else list(self.stages)

    assert Both(Config.from_json("{}")).configured_stages() == [Stage.CONNECT, Stage.RCPT]
    assert OnlyRcpt(Config.from_json('{"rcpt_only": true}')).configured_stages() == [Stage.RCPT]
    assert OnlyRcpt(Config.from_json("{}")).configured_stages() == [Stage.CONNECT, Stage.RCPT]
