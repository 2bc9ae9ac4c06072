//! `{{name}}`: a Sluice policy. It refuses senders of the domains listed in
//! `deny_domains` at MAIL FROM and marks every message it lets through
//! with an `X-{{Class}}: checked` header.

use sluice_guest::{
    Config, Context, DataResult, Envelope, Message, Param, Policy, Session, Stage, Verdict,
};

/// The policy: its settings, from `[policy.config]`.
pub struct {{Class}} {
    deny_domains: Vec<String>,
}

impl Policy for {{Class}} {
    fn name() -> &'static str {
        "{{name}}"
    }

    // The gateway calls only the hooks of these stages.
    fn stages() -> &'static [Stage] {
        &[Stage::MailFrom, Stage::Data]
    }

    // Once per session, before any hook; an error refuses the config.
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&["deny_domains"])?;
        let deny_domains = config
            .list_str("deny_domains")?
            .unwrap_or_default()
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        Ok({{Class}} { deny_domains })
    }

    fn on_mail_from(&self, ctx: &Context, _session: &Session, sender: &str, _params: &[Param]) -> Verdict {
        let domain = sender.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        match domain {
            Some(d) if self.deny_domains.contains(&d) => {
                ctx.info(&format!("sender {sender} refused"));
                Verdict::reject(550, "5.7.1", format!("sender domain {d} is not accepted"))
            }
            _ => Verdict::Continue,
        }
    }

    fn on_data(&self, _ctx: &Context, _session: &Session, _envelope: &Envelope, _message: &Message<'_>) -> DataResult {
        DataResult::continue_().add_header("X-{{Class}}", "checked")
    }
}

sluice_guest::export_policy!({{Class}});

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::{MockHost, MockMessage};

    fn policy() -> {{Class}} {
        let config = Config::from_json(r#"{"deny_domains": ["Blocked.example"]}"#).unwrap_or_else(|e| panic!("{e}"));
        {{Class}}::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn denied_domains_are_refused() {
        let host = MockHost::new();
        let ctx = host.context();
        let session = Session::default();
        assert_eq!(
            policy().on_mail_from(&ctx, &session, "ann@blocked.EXAMPLE", &[]),
            Verdict::reject(550, "5.7.1", "sender domain blocked.example is not accepted")
        );
        assert_eq!(policy().on_mail_from(&ctx, &session, "ann@sender.example", &[]), Verdict::Continue);
        assert_eq!(policy().on_mail_from(&ctx, &session, "", &[]), Verdict::Continue);
        assert!(host.logged("sender ann@blocked.EXAMPLE refused"));
    }

    #[test]
    fn messages_are_marked() {
        let host = MockHost::new();
        let mock = MockMessage::parse("Subject: hi\r\n\r\nhello\r\n");
        let r = policy().on_data(&host.context(), &Session::default(), &Envelope::default(), &mock.message());
        assert_eq!(r, DataResult::continue_().add_header("X-{{Class}}", "checked"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let config = Config::from_json(r#"{"deny_domain": []}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!({{Class}}::init(&config).is_err());
    }
}
