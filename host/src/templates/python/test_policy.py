"""Unit tests of {{module}}.py with the SDK's mock host: `python -m pytest`."""

import pytest
from {{module}} import {{Class}}
from sluice_policy import Config, ConfigError, DataResult, Envelope, Session, Verdict
from sluice_policy.mock import MockHost, MockMessage


def policy():
    return {{Class}}(Config({"deny_domains": ["Blocked.example"]}))


def test_denied_domains_are_refused():
    host = MockHost()
    ctx = host.context()
    assert policy().on_mail_from(ctx, Session(), "ann@blocked.EXAMPLE", []) == Verdict.reject(
        550, "5.7.1", "sender domain blocked.example is not accepted"
    )
    assert policy().on_mail_from(ctx, Session(), "ann@sender.example", []) == Verdict.CONTINUE
    assert policy().on_mail_from(ctx, Session(), "", []) == Verdict.CONTINUE
    assert host.logged("sender ann@blocked.EXAMPLE refused")


def test_messages_are_marked():
    message = MockMessage.parse("Subject: hi\n\nhello\n").message()
    r = policy().on_data(MockHost().context(), Session(), Envelope(), message)
    assert r == DataResult().add_header("X-{{Class}}", "checked")


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError):
        {{Class}}(Config({"deny_domain": []}))
