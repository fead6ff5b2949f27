"""toy-redis (roles/toy_redis) on the toy_redis group, for inventory/homelab.py and lab.py alike.

Keys and defaults: roles/toy_redis/__init__.py, class Settings. The password is the vault secret
toy_redis_password (auth is on by default).
"""

toy_redis = {
    # Bytes; evict least-recently-used keys past it rather than refuse writes.
    "maxmemory": 256 * 1024 * 1024,
    "maxmemory_policy": "allkeys-lru",
}
