// Tests of the JavaScript SDK itself: values, config, mock host, mock message.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, ConfigError, DataResult, HostError, Level, Policy, Route, Stage, TlsMode, Verdict, exportPolicy, findParam, truncateUtf8 } from "../sluice-policy.js";
import { MOCK_START_MS, MockHost, MockMessage } from "../sluice-mock.js";

test("values compare by value and builders return new values", () => {
  assert.deepEqual(Verdict.reject(550, "5.7.1", "no"), Verdict.reject(550, "5.7.1", "no"));
  const base = new DataResult();
  const r = base.addHeader("X-A", "b").withVerdict(Verdict.ACCEPT);
  assert.deepEqual(base.changes, []);
  assert.deepEqual(r.changes, [{ kind: "add-header", name: "X-A", value: "b" }]);
  assert.equal(r.verdict, Verdict.ACCEPT);
  assert.deepEqual(Route.relay("smtp.example", 587, TlsMode.REQUIRE), { kind: "relay", host: "smtp.example", port: 587, tls: "require" });
  assert.equal(findParam([{ name: "SIZE", value: "10" }], "size"), "10");
  assert.equal(findParam([], "SIZE"), undefined);
});

test("config getters name the key", () => {
  const c = Config.fromJson('{"s": "x", "l": ["a"], "n": 7, "b": false, "t": {"inner": {"deep": 1}}, "null": null}');
  assert.equal(c.str("s"), "x");
  assert.deepEqual(c.listStr("l"), ["a"]);
  assert.equal(c.u32("n"), 7);
  assert.equal(c.bool("b"), false);
  assert.equal(c.str("null"), undefined);
  assert.equal(c.contains("null"), false);
  assert.throws(() => c.str("n"), { message: "config key `n`: expected a string, found a number" });
  assert.throws(() => c.table("t").table("inner").str("deep"), /config key `t.inner.deep`: expected a string/);
  assert.throws(() => new Config({ zone: "a", treshold: 2 }).checkKeys(["zone", "threshold"]), {
    message: "config key `treshold` is not known (known: zone, threshold)",
  });
  assert.throws(() => Config.fromJson("{"), ConfigError);
  assert.throws(() => Config.fromJson("[1]"), /must be a table/);
  assert.throws(() => new Config({ n: -1 }).u32("n"), ConfigError);
  assert.deepEqual(Config.fromJson("").keys(), []);
});

test("mock host: kv with expiry, clock, grants, logs", () => {
  const host = new MockHost().grant("kv");
  const ctx = host.context();
  assert.equal(ctx.kvIncr("k", 1, 300), 1);
  assert.equal(ctx.kvIncr("k", 1, 300), 2);
  assert.equal(new TextDecoder().decode(ctx.kvGet("k")), "2");
  host.advance(300);
  assert.equal(ctx.kvGet("k"), undefined);
  ctx.kvSet("s", "text");
  assert.throws(() => ctx.kvIncr("s", 1), (e) => e instanceof HostError && e.kind === "invalid-argument");
  assert.throws(() => ctx.kvGet(""), (e) => e.kind === "invalid-argument");
  assert.throws(() => ctx.now(), (e) => e.kind === "access-denied" && !e.isTemporary);
  host.grant("clock");
  assert.deepEqual(ctx.now(), { seconds: MOCK_START_MS / 1000 + 300, millis: 0 });
  ctx.info("checked");
  assert.deepEqual(host.logs(), [[Level.INFO, "checked"]]);
  assert.ok(host.calls().includes("kv.incr k 1 300"));
});

test("mock host: dns and metrics", () => {
  const host = new MockHost().grantAll().dnsA("2.0.0.127.Zen.Example.", ["127.0.0.2"]).dnsMx("a.example", [[10, "mx.a.example"]]);
  host.dnsError("down.example", new HostError("temporary", "SERVFAIL"));
  const ctx = host.context();
  assert.deepEqual(ctx.dnsA("2.0.0.127.zen.example"), ["127.0.0.2"]);
  assert.deepEqual(ctx.dnsA("none.example"), []);
  assert.deepEqual(ctx.dnsMx("a.example"), [{ preference: 10, exchange: "mx.a.example" }]);
  assert.throws(() => ctx.dnsTxt("down.example"), (e) => e.isTemporary);
  assert.throws(() => ctx.dnsA("bad..name"), (e) => e.kind === "invalid-argument");
  assert.throws(() => ctx.dnsPtr("not-an-ip"), (e) => e.kind === "invalid-argument");
  ctx.counterAdd("hits", 2);
  assert.equal(host.counter("hits"), 2);
  assert.throws(() => ctx.counterAdd("Bad-Name"), (e) => e.kind === "invalid-argument");
});

test("mock message: headers, encoded words, addresses, parts, text", () => {
  const m = MockMessage.parse(
    "From: =?utf-8?q?J=C3=B6rg?= <j@example.com>\n" +
      "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n" +
      "To: a@example.com, B <b@example.com>\nCc: c@example.com\n" +
      "X-Long: one\n two\n\nHello\n",
  ).message();
  assert.equal(m.subject(), "Grüße");
  assert.deepEqual(m.header("from"), ["Jörg <j@example.com>"]);
  assert.deepEqual(m.from(), ["j@example.com"]);
  assert.deepEqual(m.to(), ["a@example.com", "b@example.com", "c@example.com"]);
  assert.equal(m.headers(10)[1].value, "=?utf-8?q?Gr=C3=BC=C3=9Fe?=");
  assert.equal(m.firstHeader("x-long"), "one two");
  assert.equal(m.text(3), "Hel");
  assert.equal(new TextDecoder().decode(m.raw(0, 5)), "From:");
  assert.equal(m.parts(10)[0].contentType, "text/plain");

  const multi = MockMessage.parse(
    'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\nContent-Type: text/plain\n\nbody text\n--b1\n' +
      'Content-Type: application/pdf; name="x.pdf"\nContent-Disposition: attachment; filename="x.pdf"\nContent-Transfer-Encoding: base64\n\nAAAA\n--b1--\n',
  ).message();
  const parts = multi.parts(10);
  assert.equal(parts.length, 2);
  assert.deepEqual(parts[1], { contentType: "application/pdf", filename: "x.pdf", size: 3, isAttachment: true });
  assert.equal(multi.text(100), "body text");
});

test("truncation and policy defaults", () => {
  assert.equal(truncateUtf8("héllo", 2), "h");
  assert.equal(truncateUtf8("héllo", 3), "hé");
  assert.throws(() => exportPolicy(class NotAPolicy {}), TypeError);
  class Defaults extends Policy {
    static name = "defaults";
    static stages = [Stage.CONNECT];
  }
  const p = new Defaults(new Config());
  const ctx = new MockHost().context();
  assert.equal(p.onConnect(ctx, {}), Verdict.CONTINUE);
  assert.deepEqual(p.onData(ctx, {}, {}, null), new DataResult());
  assert.equal(p.onRoute(ctx, {}, "a@b.example"), Route.DEFAULT);
});

test("UTF-8 by hand agrees with TextEncoder", async () => {
  const { utf8Encode, utf8Decode, utf8Length } = await import("../sluice-policy.js");
  for (const s of ["", "abc", "héllo", "Grüße €", "😀 x", "\u07ff\u0800\uffff"]) {
    assert.deepEqual(utf8Encode(s), new TextEncoder().encode(s), s);
    assert.equal(utf8Decode(new TextEncoder().encode(s)), s);
    assert.equal(utf8Length(s), new TextEncoder().encode(s).length);
  }
  assert.equal(utf8Decode(Uint8Array.from([0x61, 0xff, 0x62])), "a\ufffdb");
  assert.equal(truncateUtf8("😀x", 3), "");
  assert.equal(truncateUtf8("😀x", 4), "😀");
});

test("configured stages default to every stage and can narrow", () => {
  class Both extends Policy {
    static stages = [Stage.CONNECT, Stage.RCPT];
  }
  class OnlyRcpt extends Both {
    configuredStages() {
      return this.config.get("rcptOnly") ? [Stage.RCPT] : super.configuredStages();
    }
  }
  assert.deepEqual(new Both(Config.fromJson("{}")).configuredStages(), [Stage.CONNECT, Stage.RCPT]);
  assert.deepEqual(new OnlyRcpt(Config.fromJson('{"rcptOnly": true}')).configuredStages(), [Stage.RCPT]);
  assert.deepEqual(new OnlyRcpt(Config.fromJson("{}")).configuredStages(), [Stage.CONNECT, Stage.RCPT]);
});
