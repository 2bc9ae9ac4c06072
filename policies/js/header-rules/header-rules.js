// header-rules in JavaScript: Postfix `header_checks` as a policy, with the
// configuration of the Rust policy `policies/rust/header-rules` (see its README):
// an ordered list of rules, each a header field name (or `*`), a regular
// expression and an action (reject, discard, quarantine, add_header,
// remove_header), checked at the data stage.
//
// Patterns are JavaScript regular expressions. A leading inline flag group
// such as `(?i)` (the Rust syntax) becomes the RegExp flag; inline flags
// anywhere else are refused. `\w`, `\d` and `\b` are ASCII as in the Rust
// policy's regex-lite; unlike it, `(?i)` also folds non-ASCII letters and
// `\s` also matches Unicode spaces. JavaScript's engine backtracks, so
// keep patterns simple (regex-lite is linear-time whatever the pattern).

import { Config, ConfigError, DataResult, HostError, Policy, Stage, Verdict, exportPolicy, utf8Length } from "../../../guest/js/sluice-policy.js";

const MAX_HEADERS = 1000;
const MAX_RULES = 1000;
const MAX_PATTERN = 4096;
const RULE_KEYS = ["header", "pattern", "action", "text", "code", "status", "add", "remove"];
const FIELD_NAME = /^[!-9;-~]+$/;
const q = (s) => JSON.stringify(s);
const oneLine = (s) => !/[\r\n]/.test(s);

/** A RegExp from a pattern in the Rust syntax's common subset. */
export function compile(pattern) {
  let flags = "";
  let source = pattern;
  const lead = /^\(\?([ims]+)\)/.exec(source);
  if (lead) {
    flags = [...new Set(lead[1])].join("");
    source = source.slice(lead[0].length);
  }
  if (/\(\?[a-zA-Z-]+[):]/.test(source.replace(/\\./g, ""))) {
    throw new SyntaxError("inline flags are only supported at the start of a pattern, e.g. (?i)");
  }
  return new RegExp(source, flags);
}

class Rule {
  constructor(index, rule) {
    const key = (k) => `config key \`rules[${index}].${k}\``;
    let header, pattern, text, action;
    try {
      rule.checkKeys(RULE_KEYS);
      header = rule.str("header");
      pattern = rule.str("pattern");
      text = rule.str("text");
      action = rule.str("action");
    } catch (e) {
      throw new ConfigError(e.message.replace("config key `", `config key \`rules[${index}].`));
    }
    if (header === undefined) throw new ConfigError(`${key("header")} is required: a header field name, or "*" for every field`);
    header = header.trim();
    if (header === "*") this.header = null;
    else if (FIELD_NAME.test(header)) this.header = header.toLowerCase();
    else throw new ConfigError(`${key("header")}: ${q(header)} is not a header field name or "*"`);
    if (pattern === undefined) throw new ConfigError(`${key("pattern")} is required: a regular expression`);
    if (utf8Length(pattern) > MAX_PATTERN) {
      throw new ConfigError(`${key("pattern")}: longer than ${MAX_PATTERN} octets`);
    }
    try {
      this.regex = compile(pattern);
    } catch (e) {
      throw new ConfigError(`${key("pattern")}: ${q(pattern)} is not a valid regular expression: ${e.message}`);
    }
    this.pattern = pattern;
    if (text !== undefined && !oneLine(text)) throw new ConfigError(`${key("text")}: must be one line`);
    if (action === undefined) throw new ConfigError(`${key("action")} is required`);
    for (const [k, only] of [["code", "reject"], ["status", "reject"], ["add", "add_header"], ["remove", "remove_header"]]) {
      if (rule.contains(k) && action !== only) throw new ConfigError(`${key(k)}: only an \`${only}\` rule takes it`);
    }
    this.action = action;
    switch (action) {
      case "reject": {
        const code = rule.u32("code") ?? 550;
        if (code < 400 || code > 599) throw new ConfigError(`${key("code")}: ${code} is not a 4xx or 5xx reply code`);
        const cls = String(Math.floor(code / 100));
        const status = rule.str("status") ?? `${cls}.7.1`;
        const parts = status.split(".");
        if (!(parts.length === 3 && parts[0] === cls && parts.every((p) => /^[0-9]{1,3}$/.test(p)))) {
          throw new ConfigError(`${key("status")}: ${q(status)} is not an enhanced status code of class ${cls} (like "${cls}.7.1")`);
        }
        this.code = code;
        this.status = status;
        this.text = text ?? "Message content rejected";
        break;
      }
      case "discard":
        break;
      case "quarantine":
        this.text = text ?? `header rule ${index} matched`;
        break;
      case "add_header": {
        const add = rule.str("add");
        if (add === undefined) throw new ConfigError(`${key("add")} is required for add_header: "Name: value"`);
        const colon = add.indexOf(":");
        if (colon < 0) throw new ConfigError(`${key("add")}: ${q(add)} is not "Name: value"`);
        const name = add.slice(0, colon).trim();
        const value = add.slice(colon + 1);
        if (!FIELD_NAME.test(name) || !oneLine(value)) throw new ConfigError(`${key("add")}: ${q(add)} is not "Name: value" on one line`);
        this.add = [name, value.trim()];
        break;
      }
      case "remove_header": {
        const remove = rule.str("remove");
        if (remove !== undefined && !FIELD_NAME.test(remove)) throw new ConfigError(`${key("remove")}: ${q(remove)} is not a header field name`);
        this.remove = remove;
        break;
      }
      default:
        throw new ConfigError(`${key("action")}: ${q(action)} is not "reject", "discard", "quarantine", "add_header" or "remove_header"`);
    }
  }

  /** The name of the first field this rule matches, or null. */
  firstMatch(fields) {
    const m = (s) => this.regex.test(s);
    for (const { name, raw, decoded } of fields) {
      if (this.header !== null) {
        if (name.toLowerCase() === this.header && (m(decoded) || (raw !== decoded && m(raw)))) return name;
      } else if (m(`${name}: ${decoded}`) || (raw !== decoded && m(`${name}: ${raw}`))) {
        return name;
      }
    }
    return null;
  }
}

export class HeaderRules extends Policy {
  static name = "header-rules";
  static version = "0.1.0";
  static stages = [Stage.DATA];

  constructor(config) {
    super(config);
    config.checkKeys(["rules"]);
    const items = config.get("rules") ?? [];
    if (!Array.isArray(items)) throw new ConfigError("config key `rules`: expected a list of tables ([[policy.config.rules]])");
    if (items.length > MAX_RULES) throw new ConfigError(`config key \`rules\`: at most ${MAX_RULES} rules`);
    this.rules = items.map((item, index) => {
      if (item === null || typeof item !== "object" || Array.isArray(item)) {
        throw new ConfigError(`config key \`rules[${index}]\`: expected a table`);
      }
      return new Rule(index, new Config(item));
    });
  }

  onData(ctx, session, envelope, message) {
    if (this.rules.length === 0) return new DataResult();
    // Every field with its raw and decoded value (one `header` call per
    // distinct name).
    const decoded = new Map();
    const fields = message.headers(MAX_HEADERS).map((h) => {
      const lower = h.name.toLowerCase();
      if (!decoded.has(lower)) decoded.set(lower, message.header(h.name));
      const values = decoded.get(lower);
      return { name: h.name, raw: h.value, decoded: values.length > 0 ? values.shift() : h.value };
    });
    let result = new DataResult();
    for (const [index, rule] of this.rules.entries()) {
      const name = rule.firstMatch(fields);
      if (name === null) continue;
      ctx.info(`rule ${index} (${rule.header ?? "*"} ~ ${rule.pattern}) matched ${name}: ${rule.action}`);
      try {
        ctx.counterAdd("matched", 1);
      } catch (e) {
        if (!(e instanceof HostError)) throw e; // metrics not granted: counting is optional
      }
      switch (rule.action) {
        case "reject":
          return rule.code < 500 ? DataResult.tempfail(rule.code, rule.status, rule.text) : DataResult.reject(rule.code, rule.status, rule.text);
        case "discard":
          return DataResult.discard();
        case "quarantine":
          return result.withVerdict(Verdict.quarantine(rule.text));
        case "add_header":
          result = result.addHeader(...rule.add);
          break;
        default:
          result = result.removeHeader(rule.remove ?? name);
      }
    }
    return result;
  }
}

exportPolicy(HeaderRules);
