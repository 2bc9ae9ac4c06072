"""The component side of the SDK (componentize-py only): the exported
``Policy`` class that the generated bindings call, conversions between the
bindings' types and the SDK's, and the host capabilities behind
:class:`~sluice_policy.Context`.

``sluice policy build`` makes the component's entry module::

    import my_policy                                 # calls export_policy(...)
    from sluice_policy._component import Policy      # what componentize-py exports
"""

import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import clock as w_clock
from wit_world.imports import dns as w_dns
from wit_world.imports import errors as w_errors
from wit_world.imports import kv as w_kv
from wit_world.imports import log as w_log
from wit_world.imports import metrics as w_metrics
from wit_world.imports import types as w

from .config import Config
from .context import AccessDenied, Context, InvalidArgument, Level, Mx, Temporary, Timestamp
from .message import Message
from .policy import exported_policy
from .types import Envelope, Header, Param, PartInfo, Session, Stage, TlsInfo, TlsMode

_STAGES = {
    Stage.CONNECT: w.Stage.CONNECT,
    Stage.HELO: w.Stage.HELO,
    Stage.MAIL_FROM: w.Stage.MAIL_FROM,
    Stage.RCPT: w.Stage.RCPT,
    Stage.DATA: w.Stage.DATA,
    Stage.ROUTE: w.Stage.ROUTE,
}
_LEVELS = {
    Level.TRACE: w_log.Level.TRACE,
    Level.DEBUG: w_log.Level.DEBUG,
    Level.INFO: w_log.Level.INFO,
    Level.WARN: w_log.Level.WARN,
    Level.ERROR: w_log.Level.ERROR,
}
_TLS = {
    TlsMode.OPPORTUNISTIC: w.TlsMode.OPPORTUNISTIC,
    TlsMode.REQUIRE: w.TlsMode.REQUIRE,
    TlsMode.NONE: w.TlsMode.NONE,
}


def _host_error(err):
    v = err.value
    if isinstance(v, w_errors.HostError_AccessDenied):
        return AccessDenied()
    if isinstance(v, w_errors.HostError_InvalidArgument):
        return InvalidArgument(v.value)
    if isinstance(v, w_errors.HostError_Temporary):
        return Temporary(v.value)
    return InvalidArgument(repr(v))


def _call(fn, *args):
    try:
        return fn(*args)
    except Err as e:
        raise _host_error(e) from None


class _WasmHost:
    """The host side of Context: the component's imports."""

    def host_log(self, level, message):
        w_log.log(_LEVELS[level], message)

    def host_now(self):
        t = _call(w_clock.now)
        return Timestamp(t.seconds, t.millis)

    def host_counter_add(self, name, delta):
        _call(w_metrics.counter_add, name, delta)

    def host_kv_get(self, key):
        v = _call(w_kv.get, key)
        return None if v is None else bytes(v)

    def host_kv_set(self, key, value, ttl_seconds):
        _call(w_kv.set, key, value, ttl_seconds)

    def host_kv_incr(self, key, delta, ttl_seconds):
        return _call(w_kv.incr, key, delta, ttl_seconds)

    def host_kv_delete(self, key):
        _call(w_kv.delete, key)

    def host_dns(self, kind, name):
        if kind == "mx":
            return [Mx(p, e) for p, e in _call(w_dns.mx, name)]
        return list(_call(getattr(w_dns, kind), name))


class _WasmMessage:
    """The host side of Message: the borrowed message resource."""

    def __init__(self, resource):
        self._r = resource

    def size(self):
        return self._r.size()

    def header(self, name):
        return self._r.header(name)

    def headers(self, max):
        return [Header(h.name, h.value) for h in self._r.headers(max)]

    def subject(self):
        return self._r.subject()

    def from_(self):
        return self._r.from_()

    def to(self):
        return self._r.to()

    def parts(self, max):
        return [PartInfo(p.content_type, p.filename, p.size, p.is_attachment) for p in self._r.parts(max)]

    def text(self, max_bytes):
        return self._r.text(max_bytes)

    def raw(self, offset, length):
        return self._r.raw(offset, length)


_CTX = Context(_WasmHost())
_policy = None


def _session(s):
    tls = TlsInfo(s.tls.version, s.tls.cipher) if s.tls is not None else None
    return Session(s.client_ip, s.client_port, s.listener, s.helo, tls, s.relay_client)


def _params(ps):
    return [Param(p.name, p.value) for p in ps]


def _envelope(e):
    return Envelope(e.sender, _params(e.sender_params), list(e.recipients))


def _reply(r):
    return w.Reply(int(r.code), r.enhanced, r.text)


def _verdict(v):
    if v is None or v.kind == "continue":
        return w.Verdict_Continue()
    if v.kind == "accept":
        return w.Verdict_Accept()
    if v.kind == "reject":
        return w.Verdict_Reject(_reply(v.reply))
    if v.kind == "tempfail":
        return w.Verdict_Tempfail(_reply(v.reply))
    if v.kind == "discard":
        return w.Verdict_Discard()
    if v.kind == "quarantine":
        return w.Verdict_Quarantine(v.reason or "")
    raise ValueError(f"not a verdict: {v!r}")


def _change(c):
    if c.kind == "add-header":
        return w.Change_AddHeader(w.Header(c.name, c.value))
    if c.kind == "remove-header":
        return w.Change_RemoveHeader(c.name)
    if c.kind == "add-recipient":
        return w.Change_AddRecipient(c.name)
    if c.kind == "remove-recipient":
        return w.Change_RemoveRecipient(c.name)
    raise ValueError(f"not a change: {c!r}")


def _route(r):
    if r is None or r.kind == "default":
        return w.Route_Default()
    if r.kind == "local":
        return w.Route_Local()
    if r.kind == "relay":
        h = r.relay_host
        return w.Route_Relay(w.RelayHost(h.host, int(h.port), _TLS[h.tls]))
    if r.kind == "mx":
        return w.Route_Mx(r.domain)
    if r.kind == "reject":
        return w.Route_Reject(_reply(r.reply))
    raise ValueError(f"not a route: {r!r}")


_NOT_READY = w.Verdict_Tempfail(w.Reply(451, "4.3.0", "policy not initialised"))


def _hook(name, *args):
    """Run a hook of the policy; an exception is logged with its traceback
    and raised again, which traps the instance: the gateway then applies the
    policy's on_error."""
    try:
        return getattr(_policy, name)(_CTX, *args)
    except Exception:
        _CTX.error(f"{name} raised:\n{traceback.format_exc()}")
        raise


class Policy(exports.Policy):
    def describe(self):
        cls = exported_policy()
        stages = list(cls.stages)
        if _policy is not None:
            # After init (the host's order): only what the config needs.
            wanted = _policy.configured_stages()
            stages = [s for s in stages if s in wanted]
        return w.Description(cls.name, cls.version, [_STAGES[s] for s in stages])

    def init(self, config):
        global _policy
        cls = exported_policy()
        try:
            _policy = cls(Config.from_json(config))
        except Exception as e:
            raise Err(str(e) or type(e).__name__)

    def on_connect(self, session):
        if _policy is None:
            _CTX.error("on_connect before init")
            return _NOT_READY
        return _verdict(_hook("on_connect", _session(session)))

    def on_helo(self, session, name):
        if _policy is None:
            _CTX.error("on_helo before init")
            return _NOT_READY
        return _verdict(_hook("on_helo", _session(session), name))

    def on_mail_from(self, session, sender, params):
        if _policy is None:
            _CTX.error("on_mail_from before init")
            return _NOT_READY
        return _verdict(_hook("on_mail_from", _session(session), sender, _params(params)))

    def on_rcpt(self, session, envelope, recipient, params):
        if _policy is None:
            _CTX.error("on_rcpt before init")
            return _NOT_READY
        return _verdict(
            _hook("on_rcpt", _session(session), _envelope(envelope), recipient, _params(params))
        )

    def on_data(self, session, envelope, message):
        if _policy is None:
            _CTX.error("on_data before init")
            return w.DataResult(_NOT_READY, [])
        r = _hook("on_data", _session(session), _envelope(envelope), Message(_WasmMessage(message)))
        if r is None:
            return w.DataResult(w.Verdict_Continue(), [])
        return w.DataResult(_verdict(r.verdict), [_change(c) for c in r.changes])

    def on_route(self, envelope, recipient):
        if _policy is None:
            _CTX.error("on_route before init")
            return w.Route_Default()
        return _route(_hook("on_route", _envelope(envelope), recipient))


__all__ = ["Policy"]
