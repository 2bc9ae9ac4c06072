"""Unit tests of access.py against the SDK's mock host: the same cases as
the Rust policy's tests."""

import json

import pytest
from access import Access
from sluice_policy import Config, ConfigError, Envelope, Session, Verdict
from sluice_policy.mock import MockHost

DENIED = Verdict.reject(550, "5.7.1", "Access denied")


class Run:
    def __init__(self, config):
        self.host = MockHost().grant("metrics")
        self.policy = Access(Config(config))

    def connect(self, ip):
        return self.policy.on_connect(self.host.context(), Session(client_ip=ip))

    def helo(self, name):
        return self.policy.on_helo(self.host.context(), Session(client_ip="192.0.2.1"), name)

    def mail(self, sender):
        return self.policy.on_mail_from(self.host.context(), Session(client_ip="192.0.2.1"), sender, [])

    def rcpt(self, rcpt):
        return self.policy.on_rcpt(self.host.context(), Session(client_ip="192.0.2.1"), Envelope(), rcpt, [])


def init_err(config):
    with pytest.raises(ConfigError) as e:
        Access(Config.from_json(json.dumps(config)))
    return str(e.value)


def test_networks_deny_and_allow_exceptions():
    run = Run({"deny_networks": ["192.0.2.0/24", "2001:db8::/32"], "allow_networks": ["192.0.2.128/25", "2001:db8:1::1"]})
    assert run.connect("192.0.2.7") == DENIED
    assert run.connect("192.0.2.200") == Verdict.CONTINUE, "allow wins"
    assert run.connect("198.51.100.1") == Verdict.CONTINUE
    assert run.connect("2001:db8:5::1") == DENIED
    assert run.connect("2001:db8:1::1") == Verdict.CONTINUE
    assert run.connect("::ffff:192.0.2.7") == DENIED, "v4-mapped"
    assert run.connect("not-an-ip") == Verdict.CONTINUE
    assert run.host.logged("client 192.0.2.7 denied")
    assert run.host.counter("denied") == 3
    assert run.host.counter("allowed") == 2


def test_allow_only_with_deny_all():
    run = Run({"deny_networks": ["0.0.0.0/0", "::/0"], "allow_networks": ["10.0.0.0/8"], "allow_action": "accept"})
    assert run.connect("10.1.2.3") == Verdict.ACCEPT
    assert run.connect("192.0.2.1") == DENIED
    assert run.connect("::1") == DENIED


def test_helo_names():
    run = Run({"deny_helo": ["localhost", "*.Dyn.Example", "[127.0.0.1]"], "allow_helo": ["good.dyn.example"]})
    assert run.helo("LOCALHOST") == DENIED
    assert run.helo("localhost.") == DENIED
    assert run.helo("host-1.dyn.example") == DENIED
    assert run.helo("good.dyn.example") == Verdict.CONTINUE
    assert run.helo("dyn.example") == Verdict.CONTINUE, "subdomains only"
    assert run.helo("[127.0.0.1]") == DENIED
    assert run.helo("mail.example.com") == Verdict.CONTINUE


def test_sender_patterns():
    run = Run({
        "deny_senders": ["spammer@example.com", "@bad.example", "*.bulk.example", "noreply@", "<>", "junk.example"],
        "allow_senders": ["boss@bad.example", "@ok.bulk.example"],
    })
    assert run.mail("Spammer@Example.COM") == DENIED
    assert run.mail("other@example.com") == Verdict.CONTINUE
    assert run.mail("anyone@BAD.example") == DENIED
    assert run.mail("boss@bad.example") == Verdict.CONTINUE, "allow wins"
    assert run.mail("x@sub.bad.example") == Verdict.CONTINUE, "@domain is exact"
    assert run.mail("x@a.bulk.example") == DENIED
    assert run.mail("x@a.b.bulk.example") == DENIED
    assert run.mail("x@bulk.example") == Verdict.CONTINUE, "*. is subdomains only"
    assert run.mail("x@ok.bulk.example") == Verdict.CONTINUE
    assert run.mail("noreply@anywhere.example") == DENIED
    assert run.mail("") == DENIED, "null sender"
    assert run.mail("x@junk.example") == DENIED, "bare domain"
    assert run.host.logged("sender <> denied")


def test_recipient_patterns():
    run = Run({"deny_recipients": ["@internal.example", "@*.internal.example"], "allow_recipients": ["postmaster@", "help@internal.example"]})
    assert run.rcpt("x@internal.example") == DENIED
    assert run.rcpt("x@eu.internal.example") == DENIED
    assert run.rcpt("Postmaster@internal.example") == Verdict.CONTINUE
    assert run.rcpt("help@internal.example") == Verdict.CONTINUE
    assert run.rcpt("x@example.com") == Verdict.CONTINUE
    assert run.rcpt("postmaster") == Verdict.CONTINUE
    assert Run({"deny_senders": ["<>"]}).mail("a@b.example") == Verdict.CONTINUE


def test_custom_replies():
    run = Run({"deny_senders": ["@x.example"], "reject_code": 554, "reject_status": "5.7.25", "reject_text": "go away"})
    assert run.mail("a@x.example") == Verdict.reject(554, "5.7.25", "go away")
    run = Run({"deny_senders": ["@x.example"], "reject_code": 450})
    assert run.mail("a@x.example") == Verdict.tempfail(450, "4.7.1", "Access denied")


def test_empty_config_allows_everything_and_metrics_are_optional():
    run = Run({})
    assert run.connect("192.0.2.1") == Verdict.CONTINUE
    assert run.mail("") == Verdict.CONTINUE
    assert run.host.calls() == []
    host = MockHost()
    p = Access(Config({"deny_networks": ["192.0.2.0/24"]}))
    assert p.on_connect(host.context(), Session(client_ip="192.0.2.1")) == DENIED


def test_bad_configs_name_the_key():
    assert "`deny_network` is not known" in init_err({"deny_network": []})
    e = init_err({"deny_networks": ["192.0.2.0/33"]})
    assert "config key `deny_networks`" in e and "prefix" in e
    assert "config key `allow_networks`" in init_err({"allow_networks": ["example.com"]})
    assert "`deny_networks`: expected a list" in init_err({"deny_networks": "192.0.2.0/24"})
    assert "config key `deny_senders`" in init_err({"deny_senders": ["a@b@c"]})
    assert "config key `allow_recipients`" in init_err({"allow_recipients": ["*@example.com"]})
    assert "config key `deny_helo`" in init_err({"deny_helo": ["mail.*.example"]})
    assert "config key `reject_code`" in init_err({"reject_code": 250})
    assert "config key `reject_status`" in init_err({"reject_code": 550, "reject_status": "4.7.1"})
    assert "config key `reject_status`" in init_err({"reject_status": "5.7"})
    assert "config key `reject_text`" in init_err({"reject_text": "a\nb"})
    assert "config key `allow_action`" in init_err({"allow_action": "skip"})


def test_an_address_without_a_domain_matches_no_domain_pattern():
    run = Run({"deny_recipients": ["example.com", "*.example.com"]})
    assert run.rcpt("example.com") == Verdict.CONTINUE
    assert run.rcpt("a.example.com") == Verdict.CONTINUE


def test_only_the_stages_with_a_list_are_called():
    from sluice_policy import Stage

    def stages(config):
        return Access(Config(config)).configured_stages()

    assert stages({"deny_networks": ["192.0.2.0/24"]}) == [Stage.CONNECT]
    assert stages({"allow_helo": ["mx.example"], "deny_recipients": ["@x.example"]}) == [Stage.HELO, Stage.RCPT]
    assert stages({"deny_senders": ["a@x.example"]}) == [Stage.MAIL_FROM]
    assert stages({}) == []
