"""{{name}}: a Sluice policy. It refuses senders of the domains listed in
``deny_domains`` at MAIL FROM and marks every message it lets through with
an ``X-{{Class}}: checked`` header."""

from sluice_policy import DataResult, Policy, Stage, Verdict, export_policy


@export_policy
class {{Class}}(Policy):
    name = "{{name}}"
    version = "0.1.0"
    # The gateway calls only the hooks of these stages.
    stages = [Stage.MAIL_FROM, Stage.DATA]

    # Once per session, before any hook; an exception refuses the config.
    def __init__(self, config):
        config.check_keys(["deny_domains"])
        self.deny_domains = [d.lower() for d in config.list_str("deny_domains") or []]

    def on_mail_from(self, ctx, session, sender, params):
        domain = sender.rpartition("@")[2].lower() if "@" in sender else None
        if domain in self.deny_domains:
            ctx.info(f"sender {sender} refused")
            return Verdict.reject(550, "5.7.1", f"sender domain {domain} is not accepted")
        return Verdict.CONTINUE

    def on_data(self, ctx, session, envelope, message):
        return DataResult().add_header("X-{{Class}}", "checked")
