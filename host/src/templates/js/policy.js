// {{name}}: a Sluice policy. It refuses senders of the domains listed in
// `deny_domains` at MAIL FROM and marks every message it lets through with
// an `X-{{Class}}: checked` header.

import { DataResult, Policy, Stage, Verdict, exportPolicy } from "./sluice-policy.js";

export class {{Class}} extends Policy {
  static name = "{{name}}";
  static version = "0.1.0";
  // The gateway calls only the hooks of these stages.
  static stages = [Stage.MAIL_FROM, Stage.DATA];

  // Once per session, before any hook; an exception refuses the config.
  constructor(config) {
    super(config);
    config.checkKeys(["deny_domains"]);
    this.denyDomains = (config.listStr("deny_domains") ?? []).map((d) => d.toLowerCase());
  }

  onMailFrom(ctx, session, sender, params) {
    const at = sender.lastIndexOf("@");
    const domain = at < 0 ? null : sender.slice(at + 1).toLowerCase();
    if (domain !== null && this.denyDomains.includes(domain)) {
      ctx.info(`sender ${sender} refused`);
      return Verdict.reject(550, "5.7.1", `sender domain ${domain} is not accepted`);
    }
    return Verdict.CONTINUE;
  }

  onData(ctx, session, envelope, message) {
    return new DataResult().addHeader("X-{{Class}}", "checked");
  }
}

exportPolicy({{Class}});
