// Unit tests of {{name}}.js with the SDK's mock host: `node --test`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, ConfigError, DataResult, Verdict } from "./sluice-policy.js";
import { MockHost, MockMessage } from "./sluice-mock.js";
import { {{Class}} } from "./{{name}}.js";

const session = { clientIp: "192.0.2.1", clientPort: 0, listener: "", helo: null, tls: null, relayClient: false };
const policy = () => new {{Class}}(new Config({ deny_domains: ["Blocked.example"] }));

test("denied domains are refused", () => {
  const host = new MockHost();
  const ctx = host.context();
  assert.deepEqual(
    policy().onMailFrom(ctx, session, "ann@blocked.EXAMPLE", []),
    Verdict.reject(550, "5.7.1", "sender domain blocked.example is not accepted"),
  );
  assert.deepEqual(policy().onMailFrom(ctx, session, "ann@sender.example", []), Verdict.CONTINUE);
  assert.deepEqual(policy().onMailFrom(ctx, session, "", []), Verdict.CONTINUE);
  assert.ok(host.logged("sender ann@blocked.EXAMPLE refused"));
});

test("messages are marked", () => {
  const message = MockMessage.parse("Subject: hi\n\nhello\n").message();
  const env = { sender: "", senderParams: [], recipients: [] };
  assert.deepEqual(policy().onData(new MockHost().context(), session, env, message), new DataResult().addHeader("X-{{Class}}", "checked"));
});

test("unknown keys are refused", () => {
  assert.throws(() => new {{Class}}(new Config({ deny_domain: [] })), ConfigError);
});
