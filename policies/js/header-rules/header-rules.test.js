// Unit tests of header-rules.js against the SDK's mock host: the same
// cases as the Rust policy's tests. Run: node --test
import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, ConfigError, DataResult } from "../../../guest/js/sluice-policy.js";
import { MockHost, MockMessage } from "../../../guest/js/sluice-mock.js";
import { HeaderRules } from "./header-rules.js";

const SPAM = "From: a@example.com\nSubject: Cheap VIAGRA now\nX-Mailer: BulkMailer 2.0\nX-Spam-Score: 3\n\nbuy\n";
const HAM = "From: a@example.com\nSubject: lunch?\nX-Mailer: Thunderbird\n\nhi\n";
const session = { clientIp: "192.0.2.1", clientPort: 0, listener: "", helo: null, tls: null, relayClient: false };
const env = { sender: "", senderParams: [], recipients: [] };

const policy = (...rules) => new HeaderRules(new Config({ rules }));
function run(p, message, host = new MockHost()) {
  return [p.onData(host.context(), session, env, MockMessage.parse(message).message()), host];
}
function initErr(config) {
  try {
    new HeaderRules(Config.fromJson(JSON.stringify(config)));
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.message;
  }
  assert.fail("expected a ConfigError");
}

test("reject on Subject", () => {
  const p = policy({ header: "Subject", pattern: "(?i)viagra", action: "reject" });
  const [r, host] = run(p, SPAM);
  assert.deepEqual(r, DataResult.reject(550, "5.7.1", "Message content rejected"));
  assert.ok(host.logged("rule 0 (subject ~ (?i)viagra) matched Subject: reject"));
  assert.deepEqual(run(p, HAM)[0], new DataResult());
});

test("custom reject reply and tempfail", () => {
  let p = policy({ header: "subject", pattern: "viagra", action: "reject", code: 554, status: "5.7.0", text: "no pills" });
  assert.deepEqual(run(p, SPAM)[0], new DataResult(), "case-sensitive without (?i)");
  p = policy({ header: "subject", pattern: "VIAGRA", action: "reject", code: 451, text: "later" });
  assert.deepEqual(run(p, SPAM)[0], DataResult.tempfail(451, "4.7.1", "later"));
});

test("first match wins for final actions", () => {
  let p = policy({ header: "X-Mailer", pattern: "Bulk", action: "discard" }, { header: "Subject", pattern: "(?i)viagra", action: "reject" });
  assert.deepEqual(run(p, SPAM)[0], DataResult.discard());
  p = policy({ header: "Subject", pattern: "(?i)viagra", action: "quarantine", text: "pills" }, { header: "X-Mailer", pattern: "Bulk", action: "reject" });
  assert.deepEqual(run(p, SPAM)[0], DataResult.quarantine("pills"));
});

test("add and remove accumulate and survive quarantine", () => {
  const p = policy(
    { header: "X-Mailer", pattern: "Bulk", action: "add_header", add: "X-Flag: bulk" },
    { header: "X-Spam-Score", pattern: ".", action: "remove_header" },
    { header: "*", pattern: "^X-Mailer:", action: "remove_header", remove: "X-Originating-IP" },
    { header: "Subject", pattern: "(?i)viagra", action: "add_header", add: "X-Flag:spam" },
    { header: "Subject", pattern: "(?i)cheap", action: "quarantine" },
    { header: "Subject", pattern: ".", action: "add_header", add: "X-Never: reached" },
  );
  assert.deepEqual(
    run(p, SPAM)[0],
    DataResult.quarantine("header rule 4 matched")
      .addHeader("X-Flag", "bulk")
      .removeHeader("X-Spam-Score")
      .removeHeader("X-Originating-IP")
      .addHeader("X-Flag", "spam"),
  );
  assert.deepEqual(run(p, HAM)[0], new DataResult().removeHeader("X-Originating-IP").addHeader("X-Never", "reached"));
});

test("star rules match whole fields; named rules see the value", () => {
  let p = policy({ header: "*", pattern: "(?i)^x-mailer: bulk", action: "reject" });
  assert.equal(run(p, SPAM)[0].verdict.kind, "reject");
  assert.deepEqual(run(p, HAM)[0], new DataResult());
  p = policy({ header: "X-Mailer", pattern: "^X-Mailer", action: "reject" });
  assert.deepEqual(run(p, SPAM)[0], new DataResult());
});

test("decoded and raw values both match", () => {
  const msg = "From: a@example.com\nSubject: =?utf-8?B?Q2hlYXAgVklBR1JB?=\n\nx\n";
  assert.equal(run(policy({ header: "Subject", pattern: "(?i)viagra", action: "reject" }), msg)[0].verdict.kind, "reject");
  assert.deepEqual(run(policy({ header: "Subject", pattern: "^=\\?utf-8\\?B\\?", action: "discard" }), msg)[0], DataResult.discard());
});

test("repeated and folded headers", () => {
  const msg = "Received: from a\nReceived: from evil.example\nSubject: cheap\n  viagra\n\nx\n";
  assert.deepEqual(run(policy({ header: "received", pattern: "evil\\.example", action: "discard" }), msg)[0], DataResult.discard());
  assert.deepEqual(run(policy({ header: "Subject", pattern: "cheap\\s+viagra", action: "discard" }), msg)[0], DataResult.discard());
});

test("no rules, no host calls; metrics counted when granted", () => {
  const [r, host] = run(policy(), SPAM);
  assert.deepEqual(r, new DataResult());
  assert.deepEqual(host.calls(), []);
  const granted = new MockHost().grant("metrics");
  run(policy({ header: "Subject", pattern: "lunch", action: "add_header", add: "X-A: b" }), HAM, granted);
  assert.equal(granted.counter("matched"), 1);
});

test("bad configs name the key", () => {
  const ok = { header: "Subject", pattern: "x", action: "discard" };
  assert.match(initErr({ rule: [] }), /`rule` is not known/);
  assert.match(initErr({ rules: { header: "Subject" } }), /config key `rules`/);
  assert.match(initErr({ rules: ["Subject"] }), /config key `rules\[0\]`: expected a table/);
  assert.match(initErr({ rules: [ok, { pattern: "x", action: "discard" }] }), /config key `rules\[1\]\.header` is required/);
  assert.match(initErr({ rules: [{ ...ok, header: "Sub ject" }] }), /`rules\[0\]\.header`/);
  assert.match(initErr({ rules: [{ ...ok, pattern: "(unclosed" }] }), /`rules\[0\]\.pattern`.*not a valid regular expression/);
  assert.match(initErr({ rules: [{ ...ok, pattern: "a(?i)b" }] }), /`rules\[0\]\.pattern`/);
  assert.match(initErr({ rules: [{ ...ok, pattern: 5 }] }), /config key `rules\[0\]\.pattern`: expected a string/);
  assert.match(initErr({ rules: [{ ...ok, action: "drop" }] }), /`rules\[0\]\.action`/);
  assert.match(initErr({ rules: [{ header: "Subject", pattern: "x" }] }), /`rules\[0\]\.action` is required/);
  assert.match(initErr({ rules: [{ ...ok, action: "add_header" }] }), /`rules\[0\]\.add` is required/);
  assert.match(initErr({ rules: [{ ...ok, action: "add_header", add: "no colon" }] }), /`rules\[0\]\.add`/);
  assert.match(initErr({ rules: [{ ...ok, add: "X: y" }] }), /`rules\[0\]\.add`: only an `add_header` rule/);
  assert.match(initErr({ rules: [{ ...ok, action: "reject", code: 250 }] }), /`rules\[0\]\.code`/);
  assert.match(initErr({ rules: [{ ...ok, action: "reject", status: "4.7.1" }] }), /`rules\[0\]\.status`/);
  assert.match(initErr({ rules: [{ ...ok, action: "reject", text: "a\nb" }] }), /`rules\[0\]\.text`/);
  assert.match(initErr({ rules: [{ ...ok, when: 1 }] }), /config key `rules\[0\]\.when` is not known/);
  assert.match(initErr({ rules: [{ ...ok, action: "remove_header", remove: "A B" }] }), /`rules\[0\]\.remove`/);
  assert.match(initErr({ rules: [{ ...ok, pattern: "a".repeat(4097) }] }), /longer than/);
});
