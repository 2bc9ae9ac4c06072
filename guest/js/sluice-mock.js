// Native test doubles for `node --test`: MockHost stands in for the
// gateway's capabilities and MockMessage for the host-owned message. They
// follow the host's documented rules (key and value sizes, counter names,
// DNS name checks, the kv counter format). MockMessage is a small parser:
// header fields unfolded and trimmed, RFC 2047 encoded-words decoded (UTF-8
// and Latin-1), addresses of From/To/Cc, MIME leaves of multipart
// messages, text/plain bodies (7bit, 8bit, base64, quoted-printable). It
// agrees with the gateway's parser on ordinary messages but is not the same
// code: run the end-to-end test for exotic ones.

import { Context, HostError, Message, truncateUtf8 } from "./sluice-policy.js";

/** The time a new MockHost starts at: 2023-11-14T22:13:20Z, in ms. */
export const MOCK_START_MS = 1_700_000_000_000;
export const CAPABILITIES = Object.freeze(["clock", "metrics", "kv", "dns"]);
const KEY_MAX = 512;
const VALUE_MAX = 64 * 1024;
const I32_MIN = -(2 ** 31);
const I32_MAX = 2 ** 31 - 1;
const utf8 = new TextEncoder();

function normalizeName(name) {
  return (name.endsWith(".") ? name.slice(0, -1) : name).toLowerCase();
}

function checkName(name) {
  const n = normalizeName(name);
  const ok =
    n.length > 0 &&
    n.length <= 253 &&
    n.split(".").every((l) => l.length > 0 && l.length <= 63) &&
    /^[!-[\]-~]+$/.test(n);
  if (!ok) throw new HostError("invalid-argument", `malformed domain name ${JSON.stringify(name)}`);
  return n;
}

function checkKey(key) {
  const size = utf8.encode(key).length;
  if (size === 0 || size > KEY_MAX) {
    throw new HostError("invalid-argument", `a key is 1 to ${KEY_MAX} octets, this one is ${size}`);
  }
}

/** An IP address in a canonical text form, or null (for PTR keys). */
function normalizeIp(ip) {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(ip)) return ip.split(".").every((o) => Number(o) <= 255) ? ip : null;
  if (/^[0-9a-fA-F:.]+$/.test(ip) && ip.includes(":")) return ip.toLowerCase();
  return null;
}

/**
 * A fake gateway: in-memory kv with expiry on a settable clock, canned DNS
 * answers, captured log lines and counters, per-capability grants. A new
 * host grants nothing but logging; builders return the host:
 *
 *   const host = new MockHost().grant("kv").dnsA("2.0.0.127.zen.example", ["127.0.0.2"]);
 *   const ctx = host.context();
 */
export class MockHost {
  constructor() {
    this.granted = new Set();
    this.nowMs = MOCK_START_MS;
    this.kvEntries = new Map();
    this.dnsAnswers = new Map();
    this.dnsErrors = new Map();
    this.logLines = [];
    this.counterValues = new Map();
    this.callList = [];
  }

  // ---- builders ----
  grant(...caps) {
    for (const c of caps) {
      if (!CAPABILITIES.includes(c)) throw new Error(`unknown capability ${c} (one of ${CAPABILITIES.join(", ")})`);
      this.granted.add(c);
    }
    return this;
  }
  grantAll() {
    return this.grant(...CAPABILITIES);
  }
  revoke(cap) {
    this.granted.delete(cap);
    return this;
  }
  at(ms) {
    this.nowMs = ms;
    return this;
  }
  kv(key, value, ttlSeconds = 0) {
    const bytes = typeof value === "string" ? utf8.encode(value) : Uint8Array.from(value);
    this.kvEntries.set(key, { value: bytes, expires: this.#expiry(ttlSeconds) });
    return this;
  }
  #answers(kind, name, values) {
    const key = kind === "ptr" ? normalizeIp(name) : normalizeName(name);
    this.dnsAnswers.set(`${kind} ${key}`, [...values]);
    return this;
  }
  dnsA(name, addresses) {
    return this.#answers("a", name, addresses);
  }
  dnsAaaa(name, addresses) {
    return this.#answers("aaaa", name, addresses);
  }
  dnsMx(name, records) {
    return this.#answers("mx", name, records.map(([preference, exchange]) => ({ preference, exchange })));
  }
  dnsTxt(name, texts) {
    return this.#answers("txt", name, texts);
  }
  dnsPtr(ip, names) {
    return this.#answers("ptr", ip, names);
  }
  dnsError(name, error) {
    this.dnsErrors.set(normalizeName(name), error);
    return this;
  }

  // ---- time ----
  advance(seconds) {
    this.nowMs += Math.round(seconds * 1000);
  }
  time() {
    return { seconds: Math.floor(this.nowMs / 1000), millis: this.nowMs % 1000 };
  }

  // ---- inspection ----
  context() {
    return new Context(this);
  }
  logs() {
    return [...this.logLines];
  }
  logged(needle) {
    return this.logLines.some(([, line]) => line.includes(needle));
  }
  counter(name) {
    return this.counterValues.get(name) ?? 0;
  }
  kvValue(key) {
    return this.#live(key)?.value;
  }
  calls() {
    return [...this.callList];
  }

  // ---- the host side of Context ----
  #expiry(ttl) {
    return ttl > 0 ? this.nowMs + ttl * 1000 : null;
  }
  #live(key) {
    const e = this.kvEntries.get(key);
    return e === undefined || (e.expires !== null && this.nowMs >= e.expires) ? undefined : e;
  }
  #call(cap, what) {
    this.callList.push(what);
    if (!this.granted.has(cap)) throw new HostError("access-denied");
  }
  hostLog(level, message) {
    this.logLines.push([level, message]);
  }
  hostNow() {
    this.#call("clock", "clock.now");
    return this.time();
  }
  hostCounterAdd(name, delta) {
    this.#call("metrics", `metrics.counter_add ${name} ${delta}`);
    if (!/^[a-z0-9_]{1,64}$/.test(name)) {
      throw new HostError("invalid-argument", `a counter name is 1 to 64 of [a-z0-9_], not ${JSON.stringify(name)}`);
    }
    this.counterValues.set(name, this.counter(name) + delta);
  }
  hostKvGet(key) {
    this.#call("kv", `kv.get ${key}`);
    checkKey(key);
    return this.kvValue(key);
  }
  hostKvSet(key, value, ttl) {
    this.#call("kv", `kv.set ${key} ${ttl}`);
    checkKey(key);
    if (value.length > VALUE_MAX) {
      throw new HostError("invalid-argument", `a value is at most ${VALUE_MAX} octets, this one is ${value.length}`);
    }
    this.kvEntries.set(key, { value: Uint8Array.from(value), expires: this.#expiry(ttl) });
  }
  hostKvIncr(key, delta, ttl) {
    this.#call("kv", `kv.incr ${key} ${delta} ${ttl}`);
    checkKey(key);
    const e = this.#live(key);
    let current = 0;
    let expires = this.#expiry(ttl);
    if (e !== undefined) {
      const text = new TextDecoder().decode(e.value).trim();
      if (!/^[+-]?\d+$/.test(text) || Number(text) < I32_MIN || Number(text) > I32_MAX) {
        throw new HostError("invalid-argument", `the value of ${JSON.stringify(key)} is not a counter`);
      }
      current = Number(text);
      expires = e.expires;
    }
    const next = Math.max(I32_MIN, Math.min(I32_MAX, current + delta));
    this.kvEntries.set(key, { value: utf8.encode(String(next)), expires });
    return next;
  }
  hostKvDelete(key) {
    this.#call("kv", `kv.delete ${key}`);
    checkKey(key);
    this.kvEntries.delete(key);
  }
  hostDns(kind, name) {
    this.#call("dns", `dns.${kind} ${name}`);
    let key;
    if (kind === "ptr") {
      key = normalizeIp(name);
      if (key === null) throw new HostError("invalid-argument", `malformed IP address ${JSON.stringify(name)}`);
    } else {
      key = checkName(name);
    }
    if (this.dnsErrors.has(key)) throw this.dnsErrors.get(key);
    return [...(this.dnsAnswers.get(`${kind} ${key}`) ?? [])];
  }
}

// ---------------------------------------------------------------------------
// MockMessage

const latin1 = (bytes) => String.fromCharCode(...bytes);

function decodeCharset(bytes, charset) {
  const cs = (charset || "utf-8").toLowerCase();
  if (cs === "us-ascii" || cs === "iso-8859-1" || cs === "latin1") return latin1(bytes);
  try {
    return new TextDecoder(cs).decode(bytes);
  } catch {
    return new TextDecoder().decode(bytes);
  }
}

function base64Bytes(text) {
  return Uint8Array.from(atob(text.replace(/[^A-Za-z0-9+/=]/g, "")), (c) => c.charCodeAt(0));
}

function qpBytes(text, underscoreIsSpace) {
  const out = [];
  const s = text.replace(/=\r?\n/g, "");
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "=" && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c === "_" && underscoreIsSpace) {
      out.push(32);
    } else {
      out.push(...utf8.encode(c));
    }
  }
  return Uint8Array.from(out);
}

/** RFC 2047 encoded-words decoded; whitespace between two words dropped. */
export function decodeWords(value) {
  const word = /=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g;
  return value
    .replace(/(=\?[^?]+\?[BbQq]\?[^?]*\?=)\s+(?==\?)/g, "$1")
    .replace(word, (_, charset, enc, text) => {
      try {
        const bytes = enc.toUpperCase() === "B" ? base64Bytes(text) : qpBytes(text, true);
        return decodeCharset(bytes, charset.split("*")[0]);
      } catch {
        return _;
      }
    });
}

const unfold = (v) => v.replace(/\r?\n/g, "").trim();

function splitHead(text) {
  const at = text.search(/\r?\n\r?\n/);
  if (at < 0) return [text, ""];
  const sep = text.slice(at).match(/^\r?\n\r?\n/)[0];
  return [text.slice(0, at), text.slice(at + sep.length)];
}

function parseFields(head) {
  const fields = [];
  for (const line of head.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && fields.length > 0) fields[fields.length - 1][1] += "\r\n" + line;
    else if (line.includes(":")) {
      const colon = line.indexOf(":");
      fields.push([line.slice(0, colon).trim(), line.slice(colon + 1)]);
    }
  }
  return fields.map(([name, value]) => ({ name, raw: unfold(value), decoded: decodeWords(unfold(value)) }));
}

function param(value, name) {
  const m = value.match(new RegExp(`;\\s*${name}\\*?=\\s*("([^"]*)"|[^;\\s]+)`, "i"));
  return m ? (m[2] ?? m[1]) : undefined;
}

/** Addresses in an address-list header value (a small, lenient reader). */
export function addresses(value) {
  const out = [];
  for (const item of value.replace(/"[^"]*"/g, "").replace(/\([^)]*\)/g, "").split(",")) {
    const angle = item.match(/<([^>]*)>/);
    const addr = (angle ? angle[1] : item).trim();
    if (addr.includes("@")) out.push(addr);
  }
  return out;
}

/** A message for tests, standing in for the host's message resource. */
export class MockMessage {
  constructor(raw) {
    let bytes = typeof raw === "string" ? utf8.encode(raw) : Uint8Array.from(raw);
    let text = new TextDecoder().decode(bytes);
    if (!text.includes("\r\n")) {
      // LF line ends are taken as CRLF.
      text = text.replace(/\n/g, "\r\n");
      bytes = utf8.encode(text);
    }
    this.bytes = bytes;
    const [head, body] = splitHead(text);
    this.fields = parseFields(head);
    this.leaves = [];
    this.texts = [];
    this.#walk(this.fields, body);
  }
  static parse(raw) {
    return new MockMessage(raw);
  }
  message() {
    return new Message(this);
  }
  #walk(fields, body) {
    const get = (n) => fields.find((f) => f.name.toLowerCase() === n)?.raw ?? "";
    const ctype = get("content-type") || "text/plain";
    const type = ctype.split(";")[0].trim().toLowerCase() || "text/plain";
    if (type.startsWith("multipart/")) {
      const boundary = param(ctype, "boundary");
      if (boundary) {
        const parts = body.split(new RegExp(`\\r?\\n?--${boundary.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(--)?[ \\t]*\\r?\\n?`));
        for (const part of parts.slice(1)) {
          if (part === undefined || part === "--" || part.trim() === "") continue;
          const [h, b] = splitHead(part);
          this.#walk(parseFields(h), b);
        }
        return;
      }
    }
    const disposition = get("content-disposition");
    const filename = param(disposition, "filename") ?? param(ctype, "name") ?? null;
    const enc = get("content-transfer-encoding").toLowerCase();
    const bytes = enc === "base64" ? base64Bytes(body) : enc === "quoted-printable" ? qpBytes(body, false) : utf8.encode(body);
    const isAttachment = /^\s*attachment/i.test(disposition) || (filename !== null && !type.startsWith("text/"));
    this.leaves.push({ contentType: type, filename, size: bytes.length, isAttachment });
    if (type === "text/plain" && !isAttachment) this.texts.push(decodeCharset(bytes, param(ctype, "charset")));
  }
  #values(name) {
    return this.fields.filter((f) => f.name.toLowerCase() === name.toLowerCase()).map((f) => f.decoded);
  }

  // ---- the host side of Message ----
  size() {
    return this.bytes.length;
  }
  header(name) {
    return this.#values(name);
  }
  headers(max) {
    return this.fields.slice(0, max).map((f) => ({ name: f.name, value: f.raw }));
  }
  subject() {
    return this.#values("subject")[0];
  }
  from() {
    return this.#values("from").flatMap(addresses);
  }
  to() {
    return [...this.#values("to"), ...this.#values("cc")].flatMap(addresses);
  }
  parts(max) {
    return this.leaves.slice(0, max);
  }
  text(maxBytes) {
    return truncateUtf8(this.texts.join("\n"), maxBytes);
  }
  raw(offset, len) {
    return this.bytes.slice(offset, offset + len);
  }
}
