// sluice-policy: the JavaScript SDK for Sluice policies.
//
// A policy is one class extending `Policy` and one call, `exportPolicy`;
// `sluice policy build DIR` turns it into a WebAssembly component with
// componentize-qjs (QuickJS). `MockHost` and `MockMessage` (in
// `sluice-mock.js`) stand in for the gateway under plain `node --test`.
//
//   import { Policy, Stage, Verdict, exportPolicy } from "./sluice-policy.js";
//
//   export class NoSpamSenders extends Policy {
//     static name = "no-spam-senders";
//     static stages = [Stage.MAIL_FROM];
//     constructor(config) {
//       super(config);
//       config.checkKeys(["domain"]);
//       this.domain = config.str("domain") ?? "spam.example";
//     }
//     onMailFrom(ctx, session, sender, params) {
//       return sender.toLowerCase().endsWith("@" + this.domain)
//         ? Verdict.reject(550, "5.7.1", "no thanks")
//         : Verdict.CONTINUE;
//     }
//   }
//   exportPolicy(NoSpamSenders);
//
// This file has no imports: it runs the same in node and in the component,
// where `sluice-component.js` connects it to the gateway.

/** The contract this SDK speaks. */
export const WIT_PACKAGE = "sluice:policy@0.1.0";

/** The stages a policy may handle (the WIT enum's names). */
export const Stage = Object.freeze({
  CONNECT: "connect",
  HELO: "helo",
  MAIL_FROM: "mail-from",
  RCPT: "rcpt",
  DATA: "data",
  ROUTE: "route",
});

/** Severity of a log line. */
export const Level = Object.freeze({
  TRACE: "trace",
  DEBUG: "debug",
  INFO: "info",
  WARN: "warn",
  ERROR: "error",
});

/** TLS policy towards a relay host. */
export const TlsMode = Object.freeze({
  OPPORTUNISTIC: "opportunistic",
  REQUIRE: "require",
  NONE: "none",
});

/** An SMTP reply for a refusal. */
export function reply(code, enhanced = "", text = "") {
  return Object.freeze({ code, enhanced, text });
}

/**
 * What a policy decides at a stage: plain frozen objects, so tests can use
 * `assert.deepStrictEqual(v, Verdict.reject(550, "5.7.1", "no"))`.
 */
export const Verdict = Object.freeze({
  CONTINUE: Object.freeze({ kind: "continue" }),
  ACCEPT: Object.freeze({ kind: "accept" }),
  DISCARD: Object.freeze({ kind: "discard" }),
  reject: (code, enhanced = "", text = "") => Object.freeze({ kind: "reject", reply: reply(code, enhanced, text) }),
  tempfail: (code, enhanced = "", text = "") => Object.freeze({ kind: "tempfail", reply: reply(code, enhanced, text) }),
  quarantine: (reason) => Object.freeze({ kind: "quarantine", reason }),
});

/** A change a data-stage hook asks for. */
export const Change = Object.freeze({
  addHeader: (name, value) => Object.freeze({ kind: "add-header", name, value }),
  removeHeader: (name) => Object.freeze({ kind: "remove-header", name }),
  addRecipient: (address) => Object.freeze({ kind: "add-recipient", address }),
  removeRecipient: (address) => Object.freeze({ kind: "remove-recipient", address }),
});

/**
 * The result of the data stage: a verdict and changes (applied in order,
 * only when the chain lets the message through). `new DataResult()` is
 * "continue, no changes"; builders return a new value:
 * `new DataResult().addHeader("X-Flag", "bulk").removeHeader("X-Old")`.
 */
export class DataResult {
  constructor(verdict = Verdict.CONTINUE, changes = []) {
    this.verdict = verdict;
    this.changes = changes;
    Object.freeze(this);
  }
  static reject(code, enhanced, text) {
    return new DataResult(Verdict.reject(code, enhanced, text));
  }
  static tempfail(code, enhanced, text) {
    return new DataResult(Verdict.tempfail(code, enhanced, text));
  }
  static quarantine(reason) {
    return new DataResult(Verdict.quarantine(reason));
  }
  static discard() {
    return new DataResult(Verdict.DISCARD);
  }
  static accept() {
    return new DataResult(Verdict.ACCEPT);
  }
  withVerdict(verdict) {
    return new DataResult(verdict, this.changes);
  }
  #plus(change) {
    return new DataResult(this.verdict, [...this.changes, change]);
  }
  addHeader(name, value) {
    return this.#plus(Change.addHeader(name, value));
  }
  removeHeader(name) {
    return this.#plus(Change.removeHeader(name));
  }
  addRecipient(address) {
    return this.#plus(Change.addRecipient(address));
  }
  removeRecipient(address) {
    return this.#plus(Change.removeRecipient(address));
  }
}

/** Where one recipient goes. */
export const Route = Object.freeze({
  DEFAULT: Object.freeze({ kind: "default" }),
  LOCAL: Object.freeze({ kind: "local" }),
  relay: (host, port = 25, tls = TlsMode.OPPORTUNISTIC) => Object.freeze({ kind: "relay", host, port, tls }),
  mx: (domain) => Object.freeze({ kind: "mx", domain }),
  reject: (code, enhanced = "", text = "") => Object.freeze({ kind: "reject", reply: reply(code, enhanced, text) }),
});

/** The value of the first ESMTP parameter called `name` (any case). */
export function findParam(params, name) {
  const p = params.find((p) => p.name.toLowerCase() === name.toLowerCase());
  return p === undefined ? undefined : p.value;
}

// ---------------------------------------------------------------------------
// Config

/** A config value that is missing, has the wrong type, or is not JSON. */
export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = "ConfigError";
  }
}

function kind(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "boolean") return "a boolean";
  if (typeof v === "number") return "a number";
  if (typeof v === "string") return "a string";
  if (Array.isArray(v)) return "a list";
  return "a table";
}

/**
 * The `[policy.config]` table. Getters return `undefined` when a key is
 * absent (or null) and throw a ConfigError naming the key when its type is
 * wrong (the same texts as the Rust SDK).
 */
export class Config {
  constructor(table = {}, path = "") {
    if (table === null || typeof table !== "object" || Array.isArray(table)) {
      throw new ConfigError(`config must be a table, found ${kind(table)}`);
    }
    this.map = table;
    this.path = path;
  }
  static fromJson(text) {
    if (text.trim() === "") return new Config();
    let value;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new ConfigError(`config is not valid JSON: ${e.message}`);
    }
    return new Config(value);
  }
  keyPath(key) {
    return this.path ? `${this.path}.${key}` : key;
  }
  #wrong(key, expected, found) {
    return new ConfigError(`config key \`${this.keyPath(key)}\`: expected ${expected}, found ${kind(found)}`);
  }
  #value(key) {
    const v = Object.prototype.hasOwnProperty.call(this.map, key) ? this.map[key] : undefined;
    return v === null ? undefined : v;
  }
  get(key) {
    return this.#value(key);
  }
  contains(key) {
    return this.#value(key) !== undefined;
  }
  keys() {
    return Object.keys(this.map);
  }
  str(key) {
    const v = this.#value(key);
    if (v === undefined || typeof v === "string") return v;
    throw this.#wrong(key, "a string", v);
  }
  listStr(key) {
    const v = this.#value(key);
    if (v === undefined) return v;
    if (!Array.isArray(v)) throw this.#wrong(key, "a list of strings", v);
    for (const item of v) if (typeof item !== "string") throw this.#wrong(key, "a list of strings", item);
    return [...v];
  }
  u32(key) {
    const v = this.#value(key);
    if (v === undefined) return v;
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw this.#wrong(key, "an integer from 0 to 4294967295", v);
    return v;
  }
  int(key) {
    const v = this.#value(key);
    if (v === undefined) return v;
    if (!Number.isInteger(v)) throw this.#wrong(key, "an integer", v);
    return v;
  }
  float(key) {
    const v = this.#value(key);
    if (v === undefined) return v;
    if (typeof v !== "number") throw this.#wrong(key, "a number", v);
    return v;
  }
  bool(key) {
    const v = this.#value(key);
    if (v === undefined || typeof v === "boolean") return v;
    throw this.#wrong(key, "true or false", v);
  }
  table(key) {
    const v = this.#value(key);
    if (v === undefined) return v;
    if (typeof v !== "object" || Array.isArray(v)) throw this.#wrong(key, "a table", v);
    return new Config(v, this.keyPath(key));
  }
  checkKeys(allowed) {
    for (const k of Object.keys(this.map)) {
      if (!allowed.includes(k)) {
        throw new ConfigError(`config key \`${this.keyPath(k)}\` is not known (known: ${allowed.join(", ")})`);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Context: the host capabilities

/**
 * Why a host call failed: `kind` is "access-denied" (capability not
 * granted), "invalid-argument" or "temporary" (retrying later may succeed:
 * usually answer with a tempfail verdict).
 */
export class HostError extends Error {
  constructor(kind, why = "") {
    const text =
      kind === "access-denied"
        ? "access denied: capability not granted"
        : kind === "temporary"
          ? `temporary failure: ${why}`
          : `invalid argument: ${why}`;
    super(text);
    this.name = "HostError";
    this.kind = kind;
    this.why = why;
  }
  get isTemporary() {
    return this.kind === "temporary";
  }
}

/**
 * The capabilities of the gateway as granted to this policy
 * (`capabilities = ["clock", "metrics", "kv", "dns"]`; logging always).
 * Every call but the log ones throws a HostError on failure; a DNS name
 * without records gives `[]`. kv values are Uint8Arrays (`kvSet` also takes
 * a string); counters are 32-bit.
 */
export class Context {
  constructor(host) {
    this.host = host;
  }
  log(level, message) {
    this.host.hostLog(level, String(message));
  }
  trace(message) {
    this.log(Level.TRACE, message);
  }
  debug(message) {
    this.log(Level.DEBUG, message);
  }
  info(message) {
    this.log(Level.INFO, message);
  }
  warn(message) {
    this.log(Level.WARN, message);
  }
  error(message) {
    this.log(Level.ERROR, message);
  }
  /** `{ seconds, millis }` since the Unix epoch. */
  now() {
    return this.host.hostNow();
  }
  counterAdd(name, delta = 1) {
    this.host.hostCounterAdd(name, delta);
  }
  kvGet(key) {
    return this.host.hostKvGet(key);
  }
  kvSet(key, value, ttlSeconds = 0) {
    const bytes = typeof value === "string" ? utf8Encode(value) : Uint8Array.from(value);
    this.host.hostKvSet(key, bytes, ttlSeconds);
  }
  kvIncr(key, delta = 1, ttlSeconds = 0) {
    return this.host.hostKvIncr(key, delta, ttlSeconds);
  }
  kvDelete(key) {
    this.host.hostKvDelete(key);
  }
  dnsA(name) {
    return this.host.hostDns("a", name);
  }
  dnsAaaa(name) {
    return this.host.hostDns("aaaa", name);
  }
  /** `[{ preference, exchange }]`; the null MX has exchange ".". */
  dnsMx(name) {
    return this.host.hostDns("mx", name);
  }
  dnsTxt(name) {
    return this.host.hostDns("txt", name);
  }
  dnsPtr(ip) {
    return this.host.hostDns("ptr", ip);
  }
}

// ---------------------------------------------------------------------------
// Message

/** Most octets `Message.raw` returns per call (the host's limit too). */
export const RAW_MAX = 1 << 20;

// UTF-8 by hand: QuickJS has no TextEncoder or TextDecoder.

/** The UTF-8 octets of `text`. */
export function utf8Encode(text) {
  const out = [];
  for (const ch of String(text)) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

/** Text from UTF-8 octets (a malformed sequence becomes U+FFFD). */
export function utf8Decode(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const n = b < 0x80 ? 0 : b >= 0xf0 && b < 0xf8 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : -1;
    let c = n === 0 ? b : n === 1 ? b & 31 : n === 2 ? b & 15 : b & 7;
    let ok = n >= 0 && i + n < bytes.length + (n === 0 ? 1 : 0);
    for (let k = 1; ok && k <= n; k++) {
      const next = bytes[i + k];
      if (next === undefined || (next & 0xc0) !== 0x80) ok = false;
      else c = (c << 6) | (next & 63);
    }
    if (ok) {
      out += String.fromCodePoint(c);
      i += n + 1;
    } else {
      out += "\ufffd";
      i += 1;
    }
  }
  return out;
}

/** The length of `text` in UTF-8 octets. */
export function utf8Length(text) {
  let n = 0;
  for (const ch of String(text)) {
    const c = ch.codePointAt(0);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

/** `text` cut to at most `maxBytes` UTF-8 octets at a character boundary. */
export function truncateUtf8(text, maxBytes) {
  let n = 0;
  let end = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0);
    const size = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if (n + size > maxBytes) return text.slice(0, end);
    n += size;
    end += ch.length;
  }
  return text;
}

/**
 * The message at the data stage. The host owns and parsed it; each method
 * returns only what was asked for, bounded by the SDK too.
 */
export class Message {
  constructor(source) {
    this.source = source;
  }
  size() {
    return this.source.size();
  }
  /** Decoded values of every field called `name` (any case), in order. */
  header(name) {
    return [...this.source.header(name)];
  }
  firstHeader(name) {
    return this.header(name)[0];
  }
  /** Every field in order, `{ name, value }` with raw (unfolded) values. */
  headers(max = 1000) {
    return [...this.source.headers(max)].slice(0, max);
  }
  subject() {
    return this.source.subject() ?? undefined;
  }
  /** Addresses of the From field. */
  from() {
    return [...this.source.from()];
  }
  /** Addresses of the To and Cc fields. */
  to() {
    return [...this.source.to()];
  }
  /** MIME leaves: `{ contentType, filename, size, isAttachment }`. */
  parts(max = 100) {
    return [...this.source.parts(max)].slice(0, max);
  }
  text(maxBytes = 65536) {
    return truncateUtf8(this.source.text(maxBytes), maxBytes);
  }
  /** Raw octets (a Uint8Array) from `offset`, at most `len` and 1 MiB. */
  raw(offset = 0, len = RAW_MAX) {
    len = Math.min(len, RAW_MAX);
    return Uint8Array.from(this.source.raw(offset, len)).subarray(0, len);
  }
}

// ---------------------------------------------------------------------------
// Policy

/**
 * Base class of a policy. Set `static name`, `static stages` (and
 * optionally `static version`), take the config in the constructor (throw a
 * ConfigError to refuse it), and override the hooks of the stages listed:
 * each defaults to "continue", and the host never calls a hook whose stage
 * is not listed. The gateway constructs the policy in each fresh instance
 * (one per SMTP session) before its first hook; shared state goes through
 * the kv capability.
 *
 * Sessions are `{ clientIp, clientPort, listener, helo, tls, relayClient }`
 * (`helo` and `tls` null when absent), envelopes `{ sender, senderParams,
 * recipients }`, params `{ name, value }`.
 */
export class Policy {
  static version = "0.1.0";
  static stages = [];
  constructor(config) {
    this.config = config;
  }
  /**
   * The stages this policy needs with its config (default: all of `static
   * stages`). The host asks once per loaded version, after construction,
   * and then calls only these hooks; stages not in `static stages` are
   * ignored.
   */
  configuredStages() {
    return [...this.constructor.stages];
  }
  onConnect(ctx, session) {
    return Verdict.CONTINUE;
  }
  onHelo(ctx, session, name) {
    return Verdict.CONTINUE;
  }
  onMailFrom(ctx, session, sender, params) {
    return Verdict.CONTINUE;
  }
  onRcpt(ctx, session, envelope, recipient, params) {
    return Verdict.CONTINUE;
  }
  onData(ctx, session, envelope, message) {
    return new DataResult();
  }
  onRoute(ctx, envelope, recipient) {
    return Route.DEFAULT;
  }
}

const exported = [];

/**
 * Make `cls` the policy of this component. In node it only records the
 * class; `sluice policy build` makes the component's entry from it.
 */
export function exportPolicy(cls) {
  if (typeof cls !== "function" || !(cls.prototype instanceof Policy)) {
    throw new TypeError("exportPolicy takes a class that extends Policy");
  }
  if (!Object.prototype.hasOwnProperty.call(cls, "name") || !cls.name) {
    throw new TypeError("a policy class needs `static name = \"...\"`");
  }
  const stages = Object.values(Stage);
  for (const s of cls.stages) {
    if (!stages.includes(s)) throw new TypeError(`${cls.name}.stages: ${s} is not a Stage`);
  }
  exported.push(cls);
  return cls;
}

/** The class given to `exportPolicy` (exactly one). */
export function exportedPolicy() {
  if (exported.length !== 1) {
    throw new Error(`a policy module calls exportPolicy(...) exactly once; found ${exported.length}`);
  }
  return exported[0];
}
