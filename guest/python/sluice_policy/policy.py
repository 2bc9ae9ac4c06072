"""The :class:`Policy` base class and :func:`export_policy`."""

from __future__ import annotations

from typing import List

from .config import Config
from .context import Context
from .message import Message
from .types import DataResult, Envelope, Param, Route, Session, Stage, Verdict


class Policy:
    """Base class of a Sluice policy. Set ``name``, ``stages`` (and
    optionally ``version``), take the config in ``__init__`` (raise
    :class:`~sluice_policy.ConfigError` or ``ValueError`` to refuse it), and
    override the hooks of the stages listed: every hook defaults to
    "continue" (``Route.DEFAULT`` for ``on_route``), and the host never
    calls a hook whose stage is not listed.

    The gateway makes a fresh instance of the component per SMTP session
    and constructs the policy in it before its first hook, so attributes
    live for one session; state shared across sessions goes through the
    kv capability (``ctx.kv_incr``...).
    """

    name: str = ""
    version: str = "0.1.0"
    stages: List[Stage] = []

    def __init__(self, config: Config):
        self.config = config

    def configured_stages(self) -> List[Stage]:
        """The stages this policy needs with its config (default: all of
        ``stages``). The host asks once per loaded version, after the
        policy is constructed, and then calls only these hooks; stages not
        in ``stages`` are ignored."""
        return list(type(self).stages)

    def on_connect(self, ctx: Context, session: Session) -> Verdict:
        return Verdict.CONTINUE

    def on_helo(self, ctx: Context, session: Session, name: str) -> Verdict:
        return Verdict.CONTINUE

    def on_mail_from(self, ctx: Context, session: Session, sender: str, params: List[Param]) -> Verdict:
        return Verdict.CONTINUE

    def on_rcpt(
        self, ctx: Context, session: Session, envelope: Envelope, recipient: str, params: List[Param]
    ) -> Verdict:
        return Verdict.CONTINUE

    def on_data(self, ctx: Context, session: Session, envelope: Envelope, message: Message) -> DataResult:
        return DataResult()

    def on_route(self, ctx: Context, envelope: Envelope, recipient: str) -> Route:
        return Route.DEFAULT


_exported = []


def export_policy(cls):
    """Make ``cls`` the policy of this component (usable as a decorator).

    Natively this only records the class; ``sluice policy build`` makes the
    component's entry point from it (``sluice_policy._component``).
    """
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError("export_policy takes a subclass of sluice_policy.Policy")
    if not cls.name:
        raise TypeError(f"{cls.__name__}.name is empty: a policy needs a name")
    for stage in cls.stages:
        if not isinstance(stage, Stage):
            raise TypeError(f"{cls.__name__}.stages: {stage!r} is not a Stage")
    _exported.append(cls)
    return cls


def exported_policy():
    """The class given to :func:`export_policy` (exactly one)."""
    if len(_exported) != 1:
        raise RuntimeError(
            f"a policy module calls export_policy(...) exactly once; found {len(_exported)}"
        )
    return _exported[0]
