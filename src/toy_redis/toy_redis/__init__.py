"""toy-redis."""
