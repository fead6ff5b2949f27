"""toy-redis: a Redis-compatible (RESP2/RESP3, Redis 7.0 replies) string store in Python."""

__version__ = "0.1.0"
