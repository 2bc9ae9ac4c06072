// The component side of the JavaScript SDK (componentize-qjs only): the
// `policy` export the gateway calls, conversions between the WIT values and
// the SDK's, and the host capabilities behind `Context`.
//
// `sluice policy build` makes the component's entry module:
//
//   import "./my-policy.js";                        // calls exportPolicy(...)
//   export { policy } from ".../sluice-component.js";

import { log } from "sluice:policy/log@0.1.0";
import { now } from "sluice:policy/clock@0.1.0";
import { counterAdd } from "sluice:policy/metrics@0.1.0";
import * as kv from "sluice:policy/kv@0.1.0";
import * as dns from "sluice:policy/dns@0.1.0";
import { Config, Context, DataResult, HostError, Message, exportedPolicy } from "./sluice-policy.js";

function hostError(e) {
  const v = e !== null && typeof e === "object" && "payload" in e ? e.payload : e;
  if (v !== null && typeof v === "object" && typeof v.tag === "string") {
    return new HostError(v.tag, v.val ?? "");
  }
  return e;
}

function call(fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    throw hostError(e);
  }
}

const wasmHost = {
  hostLog: (level, message) => log(level, message),
  hostNow: () => {
    const t = call(now);
    return { seconds: t.seconds, millis: t.millis };
  },
  hostCounterAdd: (name, delta) => call(counterAdd, name, delta),
  hostKvGet: (key) => {
    const v = call(kv.get, key);
    return v === undefined || v === null ? undefined : Uint8Array.from(v);
  },
  hostKvSet: (key, value, ttl) => call(kv.set, key, value, ttl),
  hostKvIncr: (key, delta, ttl) => call(kv.incr, key, delta, ttl),
  hostKvDelete: (key) => call(kv.delete, key),
  hostDns: (kind, name) => {
    const answers = call(dns[kind], name);
    return kind === "mx" ? answers.map(([preference, exchange]) => ({ preference, exchange })) : [...answers];
  },
};

const ctx = new Context(wasmHost);
let policyInstance = null;

const wasmMessage = (resource) => ({
  size: () => resource.size(),
  header: (name) => resource.header(name),
  headers: (max) => resource.headers(max).map((h) => ({ name: h.name, value: h.value })),
  subject: () => resource.subject() ?? undefined,
  from: () => resource.from(),
  to: () => resource.to(),
  parts: (max) =>
    resource.parts(max).map((p) => ({
      contentType: p.contentType,
      filename: p.filename ?? null,
      size: p.size,
      isAttachment: p.isAttachment,
    })),
  text: (max) => resource.text(max),
  raw: (offset, len) => resource.raw(offset, len),
});

const session = (s) => ({
  clientIp: s.clientIp,
  clientPort: s.clientPort,
  listener: s.listener,
  helo: s.helo ?? null,
  tls: s.tls ? { version: s.tls.version, cipher: s.tls.cipher } : null,
  relayClient: s.relayClient,
});
const params = (ps) => ps.map((p) => ({ name: p.name, value: p.value }));
const envelope = (e) => ({ sender: e.sender, senderParams: params(e.senderParams), recipients: [...e.recipients] });
const wReply = (r) => ({ code: r.code, enhanced: r.enhanced ?? "", text: r.text ?? "" });

function wVerdict(v) {
  switch (v?.kind ?? "continue") {
    case "continue":
      return { tag: "continue" };
    case "accept":
      return { tag: "accept" };
    case "reject":
      return { tag: "reject", val: wReply(v.reply) };
    case "tempfail":
      return { tag: "tempfail", val: wReply(v.reply) };
    case "discard":
      return { tag: "discard" };
    case "quarantine":
      return { tag: "quarantine", val: String(v.reason ?? "") };
    default:
      throw new TypeError(`not a verdict: ${JSON.stringify(v)}`);
  }
}

function wChange(c) {
  switch (c.kind) {
    case "add-header":
      return { tag: "add-header", val: { name: c.name, value: c.value } };
    case "remove-header":
      return { tag: "remove-header", val: c.name };
    case "add-recipient":
      return { tag: "add-recipient", val: c.address };
    case "remove-recipient":
      return { tag: "remove-recipient", val: c.address };
    default:
      throw new TypeError(`not a change: ${JSON.stringify(c)}`);
  }
}

function wRoute(r) {
  switch (r?.kind ?? "default") {
    case "default":
      return { tag: "default" };
    case "local":
      return { tag: "local" };
    case "relay":
      return { tag: "relay", val: { host: r.host, port: r.port, tls: r.tls } };
    case "mx":
      return { tag: "mx", val: r.domain };
    case "reject":
      return { tag: "reject", val: wReply(r.reply) };
    default:
      throw new TypeError(`not a route: ${JSON.stringify(r)}`);
  }
}

const NOT_READY = { tag: "tempfail", val: { code: 451, enhanced: "4.3.0", text: "policy not initialised" } };

// Run a hook; an exception is logged with its stack and thrown again,
// which traps the instance: the gateway then applies the policy's on_error.
function hook(name, ...args) {
  try {
    return policyInstance[name](ctx, ...args);
  } catch (e) {
    ctx.error(`${name} threw: ${e && e.stack ? `${e}\n${e.stack}` : e}`);
    throw e;
  }
}

function ready(name) {
  if (policyInstance === null) {
    ctx.error(`${name} before init`);
    return false;
  }
  return true;
}

export const policy = {
  describe() {
    const cls = exportedPolicy();
    let stages = [...cls.stages];
    if (policyInstance !== null) {
      // After init (the host's order): only what the config needs.
      const wanted = policyInstance.configuredStages();
      stages = stages.filter((s) => wanted.includes(s));
    }
    return { name: cls.name, version: cls.version, stages };
  },
  init(config) {
    const cls = exportedPolicy();
    try {
      policyInstance = new cls(Config.fromJson(config));
    } catch (e) {
      throw String(e && e.message ? e.message : e);
    }
  },
  onConnect(s) {
    return ready("onConnect") ? wVerdict(hook("onConnect", session(s))) : NOT_READY;
  },
  onHelo(s, name) {
    return ready("onHelo") ? wVerdict(hook("onHelo", session(s), name)) : NOT_READY;
  },
  onMailFrom(s, sender, ps) {
    return ready("onMailFrom") ? wVerdict(hook("onMailFrom", session(s), sender, params(ps))) : NOT_READY;
  },
  onRcpt(s, e, recipient, ps) {
    return ready("onRcpt") ? wVerdict(hook("onRcpt", session(s), envelope(e), recipient, params(ps))) : NOT_READY;
  },
  onData(s, e, message) {
    if (!ready("onData")) return { verdict: NOT_READY, changes: [] };
    const r = hook("onData", session(s), envelope(e), new Message(wasmMessage(message))) ?? new DataResult();
    return { verdict: wVerdict(r.verdict), changes: (r.changes ?? []).map(wChange) };
  },
  onRoute(e, recipient) {
    return ready("onRoute") ? wRoute(hook("onRoute", envelope(e), recipient)) : { tag: "default" };
  },
};
