"""access in Python: allow and deny lists for the client address, the HELO
name, the sender and the recipients, with the configuration of the Rust
policy ``policies/rust/access`` (see its README for every key and pattern).

At each stage an allow match wins over a deny match; an allowed value gets
"continue" (or "accept" with ``allow_action = "accept"``), a denied one the
configured reply (``550 5.7.1 Access denied`` by default).
"""

import ipaddress
import json
import re

from sluice_policy import Config, ConfigError, HostError, Policy, Stage, Verdict, export_policy

KEYS = [
    "allow_networks", "deny_networks", "allow_helo", "deny_helo",
    "allow_senders", "deny_senders", "allow_recipients", "deny_recipients",
    "allow_action", "reject_code", "reject_status", "reject_text",
]
_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def q(s):
    return json.dumps(s, ensure_ascii=False)


def valid_name(name):
    return 0 < len(name) <= 253 and _NAME.fullmatch(name) is not None


def network(text):
    """A CIDR network or a plain address (a network of one)."""
    text = text.strip()
    addr, _, length = text.partition("/")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"{q(text)} is not an IP address or network") from None
    bits = ip.max_prefixlen
    if not length and "/" not in text:
        length = bits
    elif not length.isdigit() or int(length) > bits:
        raise ValueError(f"{q(text)}: the prefix length must be 0 to {bits}")
    return ipaddress.ip_network(f"{ip}/{int(length)}", strict=False)


def split(addr):
    """(local, domain) of an address; an address without `@` is all local."""
    local, at, domain = addr.rpartition("@")
    return (local, domain) if at else (addr, "")


def address_pattern(raw):
    """A matcher for an address pattern (see the README)."""
    p = raw.strip().lower()

    def bad():
        return ValueError(f"{q(raw)} is not an address pattern (user@domain, @domain, *.domain, user@ or <>)")

    if p == "<>":
        return lambda addr: addr == ""
    if not p or any(c.isspace() for c in p) or p.count("@") > 1:
        raise bad()

    def domain_pattern(domain):
        if domain.startswith("*."):
            suffix = domain[2:]
            if not valid_name(suffix):
                raise bad()
            return lambda addr: addr != "" and split(addr)[1].endswith("." + suffix)
        if not valid_name(domain):
            raise bad()
        return lambda addr: addr != "" and split(addr)[1] == domain

    if "@" not in p:
        return domain_pattern(p)
    local, _, domain = p.partition("@")
    if local == "":
        return domain_pattern(domain)
    if "*" in local:
        raise bad()
    if domain == "":
        return lambda addr: addr != "" and split(addr)[0] == local
    if not valid_name(domain):
        raise bad()
    return lambda addr: addr == p


def helo_pattern(raw):
    p = raw.strip().lower()
    if p.endswith("."):
        p = p[:-1]
    if not p or any(c.isspace() for c in p):
        raise ValueError(f"{q(raw)} is not a HELO name pattern")
    if p.startswith("*."):
        suffix = p[2:]
        if suffix and "*" not in suffix:
            return lambda name: name.endswith("." + suffix)
    elif "*" not in p:
        return lambda name: name == p
    raise ValueError(f"{q(raw)}: a `*` is only allowed as a leading `*.` (any subdomain)")


def lists(config, what, parse):
    out = []
    for key in (f"allow_{what}", f"deny_{what}"):
        items = []
        for item in config.list_str(key) or []:
            try:
                items.append(parse(item))
            except ValueError as e:
                raise ConfigError(f"config key `{key}`: {e}") from None
        out.append(items)
    return out


@export_policy
class Access(Policy):
    name = "access"
    version = "0.1.0"
    stages = [Stage.CONNECT, Stage.HELO, Stage.MAIL_FROM, Stage.RCPT]

    def __init__(self, config: Config):
        config.check_keys(KEYS)
        action = config.str("allow_action")
        if action not in (None, "continue", "accept"):
            raise ConfigError(f'config key `allow_action`: {q(action)} is not "continue" or "accept"')
        self.allow_accepts = action == "accept"
        self.networks = lists(config, "networks", network)
        self.helo = lists(config, "helo", helo_pattern)
        self.senders = lists(config, "senders", address_pattern)
        self.recipients = lists(config, "recipients", address_pattern)
        self.denied = refusal(config)

    def configured_stages(self):
        """Only the stages with a list: the host skips the others' calls."""
        pairs = [
            (Stage.CONNECT, self.networks),
            (Stage.HELO, self.helo),
            (Stage.MAIL_FROM, self.senders),
            (Stage.RCPT, self.recipients),
        ]
        return [stage for stage, (allow, deny) in pairs if allow or deny]

    def decide(self, ctx, allow, deny, matches, what):
        if any(matches(p) for p in allow):
            ctx.debug(f"{what} allowed")
            count(ctx, "allowed")
            return Verdict.ACCEPT if self.allow_accepts else Verdict.CONTINUE
        if any(matches(p) for p in deny):
            ctx.info(f"{what} denied")
            count(ctx, "denied")
            return self.denied
        return Verdict.CONTINUE

    def check_address(self, ctx, lists_, addr, what):
        allow, deny = lists_
        if not allow and not deny:
            return Verdict.CONTINUE
        lower = addr.lower()
        return self.decide(ctx, allow, deny, lambda p: p(lower), f"{what} {addr or '<>'}")

    def on_connect(self, ctx, session):
        allow, deny = self.networks
        if not allow and not deny:
            return Verdict.CONTINUE
        ip = session.ip()
        if ip is None:
            ctx.warn(f"client address {q(session.client_ip)} is not an IP address")
            return Verdict.CONTINUE
        # An IPv4-mapped IPv6 client counts as its IPv4 address.
        canonical = ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip
        return self.decide(
            ctx, allow, deny, lambda net: canonical.version == net.version and canonical in net, f"client {ip}"
        )

    def on_helo(self, ctx, session, name):
        allow, deny = self.helo
        if not allow and not deny:
            return Verdict.CONTINUE
        lower = name.strip().lower()
        if lower.endswith("."):
            lower = lower[:-1]
        return self.decide(ctx, allow, deny, lambda p: p(lower), f"HELO {name}")

    def on_mail_from(self, ctx, session, sender, params):
        return self.check_address(ctx, self.senders, sender, "sender")

    def on_rcpt(self, ctx, session, envelope, recipient, params):
        return self.check_address(ctx, self.recipients, recipient, "recipient")


def count(ctx, name):
    try:
        ctx.counter_add(name, 1)
    except HostError:
        pass  # metrics not granted: counting is optional


def refusal(config):
    code = config.u32("reject_code")
    code = 550 if code is None else code
    if not 400 <= code <= 599:
        raise ConfigError(f"config key `reject_code`: {code} is not a 4xx or 5xx reply code")
    cls = code // 100
    status = config.str("reject_status")
    status = f"{cls}.7.1" if status is None else status
    parts = status.split(".")
    if not (len(parts) == 3 and all(re.fullmatch(r"[0-9]{1,3}", p) for p in parts) and parts[0] == str(cls)):
        raise ConfigError(
            f'config key `reject_status`: {q(status)} is not an enhanced status code of class {cls} '
            f'(like "{cls}.7.1") to go with reject_code {code}'
        )
    text = config.str("reject_text")
    text = "Access denied" if text is None else text
    if "\r" in text or "\n" in text:
        raise ConfigError("config key `reject_text`: must be one line")
    return Verdict.tempfail(code, status, text) if cls == 4 else Verdict.reject(code, status, text)
