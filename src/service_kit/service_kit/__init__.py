"""What toy-redis and the alert relay share to guard their ports (see README.md)."""
