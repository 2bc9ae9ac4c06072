"""header-rules in Python: Postfix ``header_checks`` as a policy, with the
configuration of the Rust policy ``policies/rust/header-rules`` (see its README):
an ordered list of rules, each a header field name (or ``*``), a regular
expression and an action (reject, discard, quarantine, add_header,
remove_header), checked at the data stage.

Patterns are Python regular expressions compiled with ``re.ASCII``, which
gives the ASCII-only ``(?i)``, ``\\w``, ``\\d``, ``\\s`` and ``\\b`` of the
Rust policy's ``regex-lite``; the common syntax of both (classes,
alternation, repetition, anchors, ``(?i)`` at the start) means the same.
Python's engine backtracks, so keep patterns simple (the Rust one is
linear-time whatever the pattern).
"""

import json
import re

from sluice_policy import Config, ConfigError, DataResult, HostError, Policy, Stage, Verdict, export_policy

MAX_HEADERS = 1000
MAX_RULES = 1000
MAX_PATTERN = 4096
RULE_KEYS = ["header", "pattern", "action", "text", "code", "status", "add", "remove"]
ACTIONS = ("reject", "discard", "quarantine", "add_header", "remove_header")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_STATUS_PART = re.compile(r"[0-9]{1,3}")


def q(s):
    """A string quoted as the Rust policy's messages quote it."""
    return json.dumps(s, ensure_ascii=False)


class Rule:
    def __init__(self, index, rule: Config):
        key = lambda k: f"config key `rules[{index}].{k}`"  # noqa: E731
        try:
            rule.check_keys(RULE_KEYS)
            header = rule.str("header")
            pattern = rule.str("pattern")
            text = rule.str("text")
            action = rule.str("action")
        except ConfigError as e:
            raise ConfigError(str(e).replace("config key `", f"config key `rules[{index}].", 1)) from None
        if header is None:
            raise ConfigError(f'{key("header")} is required: a header field name, or "*" for every field')
        header = header.strip()
        if header == "*":
            self.header = None
        elif _FIELD_NAME.fullmatch(header):
            self.header = header.lower()
        else:
            raise ConfigError(f'{key("header")}: {q(header)} is not a header field name or "*"')
        if pattern is None:
            raise ConfigError(f"{key('pattern')} is required: a regular expression")
        if len(pattern.encode()) > MAX_PATTERN:
            raise ConfigError(f"{key('pattern')}: longer than {MAX_PATTERN} octets")
        try:
            self.regex = re.compile(pattern, re.ASCII)
        except re.error as e:
            raise ConfigError(f"{key('pattern')}: {q(pattern)} is not a valid regular expression: {e}") from None
        self.pattern = pattern
        if text is not None and ("\r" in text or "\n" in text):
            raise ConfigError(f"{key('text')}: must be one line")
        if action is None:
            raise ConfigError(f"{key('action')} is required")
        for k, only in (("code", "reject"), ("status", "reject"), ("add", "add_header"), ("remove", "remove_header")):
            if rule.contains(k) and action != only:
                raise ConfigError(f"{key(k)}: only an `{only}` rule takes it")
        self.action = action
        if action == "reject":
            code = rule.u32("code")
            code = 550 if code is None else code
            if not 400 <= code <= 599:
                raise ConfigError(f"{key('code')}: {code} is not a 4xx or 5xx reply code")
            cls = str(code // 100)
            status = rule.str("status") or f"{cls}.7.1"
            parts = status.split(".")
            if not (len(parts) == 3 and parts[0] == cls and all(_STATUS_PART.fullmatch(p) for p in parts)):
                raise ConfigError(
                    f'{key("status")}: {q(status)} is not an enhanced status code of class {cls} (like "{cls}.7.1")'
                )
            self.code, self.status = code, status
            self.text = text if text is not None else "Message content rejected"
        elif action == "discard":
            pass
        elif action == "quarantine":
            self.text = text if text is not None else f"header rule {index} matched"
        elif action == "add_header":
            add = rule.str("add")
            if add is None:
                raise ConfigError(f'{key("add")} is required for add_header: "Name: value"')
            if ":" not in add:
                raise ConfigError(f'{key("add")}: {q(add)} is not "Name: value"')
            name, value = add.split(":", 1)
            name = name.strip()
            if not _FIELD_NAME.fullmatch(name) or "\r" in value or "\n" in value:
                raise ConfigError(f'{key("add")}: {q(add)} is not "Name: value" on one line')
            self.add = (name, value.strip())
        elif action == "remove_header":
            remove = rule.str("remove")
            if remove is not None and not _FIELD_NAME.fullmatch(remove):
                raise ConfigError(f"{key('remove')}: {q(remove)} is not a header field name")
            self.remove = remove
        else:
            raise ConfigError(
                f'{key("action")}: {q(action)} is not "reject", "discard", "quarantine", "add_header" or "remove_header"'
            )

    def first_match(self, fields):
        """The first field (name, raw, decoded) this rule matches."""
        search = self.regex.search
        for name, raw, decoded in fields:
            if self.header is not None:
                if name.lower() == self.header and (search(decoded) or (raw != decoded and search(raw))):
                    return name
            elif search(f"{name}: {decoded}") or (raw != decoded and search(f"{name}: {raw}")):
                return name
        return None


@export_policy
class HeaderRules(Policy):
    name = "header-rules"
    version = "0.1.0"
    stages = [Stage.DATA]

    def __init__(self, config: Config):
        config.check_keys(["rules"])
        items = config.get("rules")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ConfigError("config key `rules`: expected a list of tables ([[policy.config.rules]])")
        if len(items) > MAX_RULES:
            raise ConfigError(f"config key `rules`: at most {MAX_RULES} rules")
        self.rules = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ConfigError(f"config key `rules[{index}]`: expected a table")
            self.rules.append(Rule(index, Config(item)))

    def on_data(self, ctx, session, envelope, message):
        if not self.rules:
            return DataResult()
        # Every field with its raw and decoded value (one `header` call per
        # distinct name).
        decoded = {}
        fields = []
        for h in message.headers(MAX_HEADERS):
            lower = h.name.lower()
            if lower not in decoded:
                decoded[lower] = iter(message.header(h.name))
            fields.append((h.name, h.value, next(decoded[lower], h.value)))
        result = DataResult()
        for index, rule in enumerate(self.rules):
            name = rule.first_match(fields)
            if name is None:
                continue
            ctx.info(f"rule {index} ({rule.header or '*'} ~ {rule.pattern}) matched {name}: {rule.action}")
            try:
                ctx.counter_add("matched", 1)
            except HostError:
                pass  # metrics not granted: counting is optional
            if rule.action == "reject":
                if rule.code < 500:
                    return DataResult.tempfail(rule.code, rule.status, rule.text)
                return DataResult.reject(rule.code, rule.status, rule.text)
            if rule.action == "discard":
                return DataResult.discard()
            if rule.action == "quarantine":
                return result.with_verdict(Verdict.quarantine(rule.text))
            if rule.action == "add_header":
                result = result.add_header(*rule.add)
            else:
                result = result.remove_header(rule.remove or name)
        return result
