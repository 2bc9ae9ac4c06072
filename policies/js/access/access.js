// access in JavaScript: allow and deny lists for the client address, the
// HELO name, the sender and the recipients, with the configuration of the
// Rust policy `policies/rust/access` (see its README for every key and pattern).
//
// At each stage an allow match wins over a deny match; an allowed value
// gets "continue" (or "accept" with `allow_action = "accept"`), a denied one
// the configured reply (`550 5.7.1 Access denied` by default).

import { ConfigError, HostError, Policy, Stage, Verdict, exportPolicy } from "../../../guest/js/sluice-policy.js";

const KEYS = [
  "allow_networks", "deny_networks", "allow_helo", "deny_helo",
  "allow_senders", "deny_senders", "allow_recipients", "deny_recipients",
  "allow_action", "reject_code", "reject_status", "reject_text",
];

const q = (s) => JSON.stringify(s);
const NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const validName = (name) => name.length > 0 && name.length <= 253 && NAME.test(name);

// ---- IP addresses as [version, BigInt] ----

function parseV4(text) {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let n = 0n;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
    n = (n << 8n) | BigInt(p);
  }
  return n;
}

function parseV6(text) {
  if (!/^[0-9A-Fa-f:.]+$/.test(text)) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (s) => {
    if (s === "") return [];
    const out = [];
    const items = s.split(":");
    for (let i = 0; i < items.length; i++) {
      const g = items[i];
      if (i === items.length - 1 && g.includes(".")) {
        const v4 = parseV4(g);
        if (v4 === null) return null;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else if (/^[0-9A-Fa-f]{1,4}$/.test(g)) {
        out.push(parseInt(g, 16));
      } else {
        return null;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  let n = 0n;
  for (const g of [...head, ...Array(missing).fill(0), ...tail]) n = (n << 16n) | BigInt(g);
  return n;
}

/** `[4 | 6, BigInt]`, or null. */
export function parseIp(text) {
  const v4 = parseV4(text);
  if (v4 !== null) return [4, v4];
  const v6 = parseV6(text);
  return v6 === null ? null : [6, v6];
}

const mask = (bits, len) => (len === 0 ? 0n : ((1n << BigInt(len)) - 1n) << BigInt(bits - len));

/** A CIDR network or a plain address (a network of one). */
export function network(raw) {
  const text = raw.trim();
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(addr);
  if (ip === null) throw new Error(`${q(text)} is not an IP address or network`);
  const bits = ip[0] === 4 ? 32 : 128;
  let len = bits;
  if (slash >= 0) {
    const l = text.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(l) || Number(l) > bits) throw new Error(`${q(text)}: the prefix length must be 0 to ${bits}`);
    len = Number(l);
  }
  const m = mask(bits, len);
  return { version: ip[0], net: ip[1] & m, mask: m };
}

// ---- name and address patterns ----

function split(addr) {
  const at = addr.lastIndexOf("@");
  return at < 0 ? [addr, ""] : [addr.slice(0, at), addr.slice(at + 1)];
}

export function addressPattern(raw) {
  const p = raw.trim().toLowerCase();
  const bad = () => new Error(`${q(raw)} is not an address pattern (user@domain, @domain, *.domain, user@ or <>)`);
  if (p === "<>") return (addr) => addr === "";
  if (p === "" || /\s/.test(p) || p.split("@").length > 2) throw bad();
  const domainPattern = (domain) => {
    if (domain.startsWith("*.")) {
      const suffix = domain.slice(2);
      if (!validName(suffix)) throw bad();
      return (addr) => addr !== "" && split(addr)[1].endsWith("." + suffix);
    }
    if (!validName(domain)) throw bad();
    return (addr) => addr !== "" && split(addr)[1] === domain;
  };
  const at = p.indexOf("@");
  if (at < 0) return domainPattern(p);
  const local = p.slice(0, at);
  const domain = p.slice(at + 1);
  if (local === "") return domainPattern(domain);
  if (local.includes("*")) throw bad();
  if (domain === "") return (addr) => addr !== "" && split(addr)[0] === local;
  if (!validName(domain)) throw bad();
  return (addr) => addr === p;
}

export function heloPattern(raw) {
  let p = raw.trim().toLowerCase();
  if (p.endsWith(".")) p = p.slice(0, -1);
  if (p === "" || /\s/.test(p)) throw new Error(`${q(raw)} is not a HELO name pattern`);
  if (p.startsWith("*.")) {
    const suffix = p.slice(2);
    if (suffix !== "" && !suffix.includes("*")) return (name) => name.endsWith("." + suffix);
  } else if (!p.includes("*")) {
    return (name) => name === p;
  }
  throw new Error(`${q(raw)}: a \`*\` is only allowed as a leading \`*.\` (any subdomain)`);
}

function lists(config, what, parse) {
  return [`allow_${what}`, `deny_${what}`].map((key) =>
    (config.listStr(key) ?? []).map((item) => {
      try {
        return parse(item);
      } catch (e) {
        throw new ConfigError(`config key \`${key}\`: ${e.message}`);
      }
    }),
  );
}

function refusal(config) {
  const code = config.u32("reject_code") ?? 550;
  if (code < 400 || code > 599) throw new ConfigError(`config key \`reject_code\`: ${code} is not a 4xx or 5xx reply code`);
  const cls = Math.floor(code / 100);
  const status = config.str("reject_status") ?? `${cls}.7.1`;
  const parts = status.split(".");
  if (!(parts.length === 3 && parts.every((p) => /^[0-9]{1,3}$/.test(p)) && parts[0] === String(cls))) {
    throw new ConfigError(
      `config key \`reject_status\`: ${q(status)} is not an enhanced status code of class ${cls} (like "${cls}.7.1") to go with reject_code ${code}`,
    );
  }
  const text = config.str("reject_text") ?? "Access denied";
  if (/[\r\n]/.test(text)) throw new ConfigError("config key `reject_text`: must be one line");
  return cls === 4 ? Verdict.tempfail(code, status, text) : Verdict.reject(code, status, text);
}

function count(ctx, name) {
  try {
    ctx.counterAdd(name, 1);
  } catch (e) {
    if (!(e instanceof HostError)) throw e; // metrics not granted: counting is optional
  }
}

export class Access extends Policy {
  static name = "access";
  static version = "0.1.0";
  static stages = [Stage.CONNECT, Stage.HELO, Stage.MAIL_FROM, Stage.RCPT];

  constructor(config) {
    super(config);
    config.checkKeys(KEYS);
    const action = config.str("allow_action");
    if (action !== undefined && action !== "continue" && action !== "accept") {
      throw new ConfigError(`config key \`allow_action\`: ${q(action)} is not "continue" or "accept"`);
    }
    this.allowAccepts = action === "accept";
    this.networks = lists(config, "networks", network);
    this.helo = lists(config, "helo", heloPattern);
    this.senders = lists(config, "senders", addressPattern);
    this.recipients = lists(config, "recipients", addressPattern);
    this.denied = refusal(config);
  }

  /** Only the stages with a list: the host skips the others' calls. */
  configuredStages() {
    const pairs = [
      [Stage.CONNECT, this.networks],
      [Stage.HELO, this.helo],
      [Stage.MAIL_FROM, this.senders],
      [Stage.RCPT, this.recipients],
    ];
    return pairs.filter(([, [allow, deny]]) => allow.length > 0 || deny.length > 0).map(([stage]) => stage);
  }

  decide(ctx, [allow, deny], matches, what) {
    if (allow.some(matches)) {
      ctx.debug(`${what} allowed`);
      count(ctx, "allowed");
      return this.allowAccepts ? Verdict.ACCEPT : Verdict.CONTINUE;
    }
    if (deny.some(matches)) {
      ctx.info(`${what} denied`);
      count(ctx, "denied");
      return this.denied;
    }
    return Verdict.CONTINUE;
  }

  checkAddress(ctx, lists, addr, what) {
    if (lists[0].length === 0 && lists[1].length === 0) return Verdict.CONTINUE;
    const lower = addr.toLowerCase();
    return this.decide(ctx, lists, (p) => p(lower), `${what} ${addr === "" ? "<>" : addr}`);
  }

  onConnect(ctx, session) {
    if (this.networks[0].length === 0 && this.networks[1].length === 0) return Verdict.CONTINUE;
    let ip = parseIp(session.clientIp);
    if (ip === null) {
      ctx.warn(`client address ${q(session.clientIp)} is not an IP address`);
      return Verdict.CONTINUE;
    }
    // An IPv4-mapped IPv6 client (::ffff:a.b.c.d) counts as its IPv4 address.
    if (ip[0] === 6 && ip[1] >> 32n === 0xffffn) ip = [4, ip[1] & 0xffffffffn];
    const [version, n] = ip;
    return this.decide(ctx, this.networks, (net) => net.version === version && (n & net.mask) === net.net, `client ${session.clientIp}`);
  }

  onHelo(ctx, session, name) {
    if (this.helo[0].length === 0 && this.helo[1].length === 0) return Verdict.CONTINUE;
    let lower = name.trim().toLowerCase();
    if (lower.endsWith(".")) lower = lower.slice(0, -1);
    return this.decide(ctx, this.helo, (p) => p(lower), `HELO ${name}`);
  }

  onMailFrom(ctx, session, sender, params) {
    return this.checkAddress(ctx, this.senders, sender, "sender");
  }

  onRcpt(ctx, session, envelope, recipient, params) {
    return this.checkAddress(ctx, this.recipients, recipient, "recipient");
  }
}

exportPolicy(Access);
