"""alert-relay."""
