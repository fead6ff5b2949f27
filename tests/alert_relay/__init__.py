"""alert-relay: the relay process between fake Slack/FAX.PLUS and real Alertmanager."""
