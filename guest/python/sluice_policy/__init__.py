"""``sluice_policy``: the Python SDK for Sluice policies.

A policy is one subclass of :class:`Policy` and one call,
:func:`export_policy`; ``sluice policy build DIR`` turns it into a
WebAssembly component with componentize-py. :class:`MockHost` and
:class:`MockMessage` (in ``sluice_policy.mock``) stand in for the gateway in
plain ``python -m pytest``::

    from sluice_policy import Policy, Stage, Verdict, export_policy

    @export_policy
    class NoSpamSenders(Policy):
        name = "no-spam-senders"
        stages = [Stage.MAIL_FROM]

        def __init__(self, config):
            config.check_keys(["domain"])
            self.domain = config.str("domain") or "spam.example"

        def on_mail_from(self, ctx, session, sender, params):
            if sender.lower().endswith("@" + self.domain):
                return Verdict.reject(550, "5.7.1", "no thanks")
            return Verdict.CONTINUE
"""

from .config import Config, ConfigError
from .context import AccessDenied, Context, HostError, InvalidArgument, Level, Mx, Temporary, Timestamp
from .message import RAW_MAX, Message
from .policy import Policy, export_policy
from .types import (
    Change,
    DataResult,
    Envelope,
    Header,
    Param,
    PartInfo,
    RelayHost,
    Reply,
    Route,
    Session,
    Stage,
    TlsInfo,
    TlsMode,
    Verdict,
)

#: The contract this SDK speaks.
WIT_PACKAGE = "sluice:policy@0.1.0"
__version__ = "0.1.0"

__all__ = [
    "AccessDenied", "Change", "Config", "ConfigError", "Context", "DataResult", "Envelope",
    "Header", "HostError", "InvalidArgument", "Level", "Message", "Mx", "Param", "PartInfo",
    "Policy", "RAW_MAX", "RelayHost", "Reply", "Route", "Session", "Stage", "Temporary",
    "Timestamp", "TlsInfo", "TlsMode", "Verdict", "WIT_PACKAGE", "export_policy",
]
