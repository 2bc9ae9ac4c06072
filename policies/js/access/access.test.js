// Unit tests of access.js against the SDK's mock host (no WebAssembly): the
// same cases as the Rust policy's tests. Run: node --test
import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, ConfigError, Stage, Verdict } from "../../../guest/js/sluice-policy.js";
import { MockHost } from "../../../guest/js/sluice-mock.js";
import { Access } from "./access.js";

const DENIED = Verdict.reject(550, "5.7.1", "Access denied");
const from = (ip) => ({ clientIp: ip, clientPort: 0, listener: "", helo: null, tls: null, relayClient: false });
const env = { sender: "", senderParams: [], recipients: [] };

function run(config) {
  const host = new MockHost().grant("metrics");
  const policy = new Access(new Config(config));
  const ctx = host.context();
  return {
    host,
    connect: (ip) => policy.onConnect(ctx, from(ip)),
    helo: (name) => policy.onHelo(ctx, from("192.0.2.1"), name),
    mail: (sender) => policy.onMailFrom(ctx, from("192.0.2.1"), sender, []),
    rcpt: (rcpt) => policy.onRcpt(ctx, from("192.0.2.1"), env, rcpt, []),
  };
}

function initErr(config) {
  try {
    new Access(Config.fromJson(JSON.stringify(config)));
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.message;
  }
  assert.fail("expected a ConfigError");
}

test("networks: deny, and allow exceptions", () => {
  const r = run({ deny_networks: ["192.0.2.0/24", "2001:db8::/32"], allow_networks: ["192.0.2.128/25", "2001:db8:1::1"] });
  assert.deepEqual(r.connect("192.0.2.7"), DENIED);
  assert.deepEqual(r.connect("192.0.2.200"), Verdict.CONTINUE, "allow wins");
  assert.deepEqual(r.connect("198.51.100.1"), Verdict.CONTINUE);
  assert.deepEqual(r.connect("2001:db8:5::1"), DENIED);
  assert.deepEqual(r.connect("2001:db8:1::1"), Verdict.CONTINUE);
  assert.deepEqual(r.connect("::ffff:192.0.2.7"), DENIED, "v4-mapped");
  assert.deepEqual(r.connect("not-an-ip"), Verdict.CONTINUE);
  assert.ok(r.host.logged("client 192.0.2.7 denied"));
  assert.equal(r.host.counter("denied"), 3);
  assert.equal(r.host.counter("allowed"), 2);
});

test("allow only, with deny all", () => {
  const r = run({ deny_networks: ["0.0.0.0/0", "::/0"], allow_networks: ["10.0.0.0/8"], allow_action: "accept" });
  assert.deepEqual(r.connect("10.1.2.3"), Verdict.ACCEPT);
  assert.deepEqual(r.connect("192.0.2.1"), DENIED);
  assert.deepEqual(r.connect("::1"), DENIED);
});

test("HELO names", () => {
  const r = run({ deny_helo: ["localhost", "*.Dyn.Example", "[127.0.0.1]"], allow_helo: ["good.dyn.example"] });
  assert.deepEqual(r.helo("LOCALHOST"), DENIED);
  assert.deepEqual(r.helo("localhost."), DENIED);
  assert.deepEqual(r.helo("host-1.dyn.example"), DENIED);
  assert.deepEqual(r.helo("good.dyn.example"), Verdict.CONTINUE);
  assert.deepEqual(r.helo("dyn.example"), Verdict.CONTINUE, "subdomains only");
  assert.deepEqual(r.helo("[127.0.0.1]"), DENIED);
  assert.deepEqual(r.helo("mail.example.com"), Verdict.CONTINUE);
});

test("sender patterns", () => {
  const r = run({
    deny_senders: ["spammer@example.com", "@bad.example", "*.bulk.example", "noreply@", "<>", "junk.example"],
    allow_senders: ["boss@bad.example", "@ok.bulk.example"],
  });
  assert.deepEqual(r.mail("Spammer@Example.COM"), DENIED);
  assert.deepEqual(r.mail("other@example.com"), Verdict.CONTINUE);
  assert.deepEqual(r.mail("anyone@BAD.example"), DENIED);
  assert.deepEqual(r.mail("boss@bad.example"), Verdict.CONTINUE, "allow wins");
  assert.deepEqual(r.mail("x@sub.bad.example"), Verdict.CONTINUE, "@domain is exact");
  assert.deepEqual(r.mail("x@a.bulk.example"), DENIED);
  assert.deepEqual(r.mail("x@a.b.bulk.example"), DENIED);
  assert.deepEqual(r.mail("x@bulk.example"), Verdict.CONTINUE, "*. is subdomains only");
  assert.deepEqual(r.mail("x@ok.bulk.example"), Verdict.CONTINUE);
  assert.deepEqual(r.mail("noreply@anywhere.example"), DENIED);
  assert.deepEqual(r.mail(""), DENIED, "null sender");
  assert.deepEqual(r.mail("x@junk.example"), DENIED, "bare domain");
  assert.ok(r.host.logged("sender <> denied"));
});

test("recipient patterns", () => {
  const r = run({ deny_recipients: ["@internal.example", "@*.internal.example"], allow_recipients: ["postmaster@", "help@internal.example"] });
  assert.deepEqual(r.rcpt("x@internal.example"), DENIED);
  assert.deepEqual(r.rcpt("x@eu.internal.example"), DENIED);
  assert.deepEqual(r.rcpt("Postmaster@internal.example"), Verdict.CONTINUE);
  assert.deepEqual(r.rcpt("help@internal.example"), Verdict.CONTINUE);
  assert.deepEqual(r.rcpt("x@example.com"), Verdict.CONTINUE);
  assert.deepEqual(r.rcpt("postmaster"), Verdict.CONTINUE);
  assert.deepEqual(run({ deny_senders: ["<>"] }).mail("a@b.example"), Verdict.CONTINUE);
  assert.deepEqual(run({ deny_recipients: ["example.com"] }).rcpt("example.com"), Verdict.CONTINUE);
});

test("custom replies", () => {
  let r = run({ deny_senders: ["@x.example"], reject_code: 554, reject_status: "5.7.25", reject_text: "go away" });
  assert.deepEqual(r.mail("a@x.example"), Verdict.reject(554, "5.7.25", "go away"));
  r = run({ deny_senders: ["@x.example"], reject_code: 450 });
  assert.deepEqual(r.mail("a@x.example"), Verdict.tempfail(450, "4.7.1", "Access denied"));
});

test("an empty config allows everything; metrics are optional", () => {
  const r = run({});
  assert.deepEqual(r.connect("192.0.2.1"), Verdict.CONTINUE);
  assert.deepEqual(r.mail(""), Verdict.CONTINUE);
  assert.deepEqual(r.host.calls(), []);
  const host = new MockHost();
  const p = new Access(new Config({ deny_networks: ["192.0.2.0/24"] }));
  assert.deepEqual(p.onConnect(host.context(), from("192.0.2.1")), DENIED);
});

test("bad configs name the key", () => {
  assert.match(initErr({ deny_network: [] }), /`deny_network` is not known/);
  assert.match(initErr({ deny_networks: ["192.0.2.0/33"] }), /config key `deny_networks`.*prefix/);
  assert.match(initErr({ allow_networks: ["example.com"] }), /config key `allow_networks`/);
  assert.match(initErr({ deny_networks: "192.0.2.0/24" }), /`deny_networks`: expected a list/);
  assert.match(initErr({ deny_senders: ["a@b@c"] }), /config key `deny_senders`/);
  assert.match(initErr({ allow_recipients: ["*@example.com"] }), /config key `allow_recipients`/);
  assert.match(initErr({ deny_helo: ["mail.*.example"] }), /config key `deny_helo`/);
  assert.match(initErr({ reject_code: 250 }), /config key `reject_code`/);
  assert.match(initErr({ reject_code: 550, reject_status: "4.7.1" }), /config key `reject_status`/);
  assert.match(initErr({ reject_status: "5.7" }), /config key `reject_status`/);
  assert.match(initErr({ reject_text: "a\nb" }), /config key `reject_text`/);
  assert.match(initErr({ allow_action: "skip" }), /config key `allow_action`/);
});

test("only the stages with a list are called", () => {
  const stages = (config) => new Access(new Config(config)).configuredStages();
  assert.deepEqual(stages({ deny_networks: ["192.0.2.0/24"] }), [Stage.CONNECT]);
  assert.deepEqual(stages({ allow_helo: ["mx.example"], deny_recipients: ["@x.example"] }), [Stage.HELO, Stage.RCPT]);
  assert.deepEqual(stages({ deny_senders: ["a@x.example"] }), [Stage.MAIL_FROM]);
  assert.deepEqual(stages({}), []);
});
