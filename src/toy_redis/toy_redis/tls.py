"""TLS for the RESP and metrics listeners, under Redis's settings (tls-port, tls-cert-file,
tls-key-file, tls-ca-cert-file, tls-auth-clients; see redis.conf's TLS section).

A TLS client counts against `maxclients` and `timeout` once its handshake is done (a refused one
then gets Redis's error over TLS, which redis-cli can show); the handshake itself must be done
within `auth_timeout`, so connections that never finish one are not held longer than clients that
never log in.
"""

from __future__ import annotations

import ssl

from .config import Config, ConfigError

# Redis's default tls-protocols is "TLSv1.2 TLSv1.3".
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
VERIFY_MODES = {"yes": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "no": ssl.CERT_NONE}


def server_context(config: Config, source: str) -> ssl.SSLContext | None:
    """The listeners' TLS context, or None when tls_port is 0. A file that cannot be used is a
    ConfigError naming its key."""
    if not config.tls_port:
        return None
    for key in ("tls_cert_file", "tls_key_file", "tls_ca_cert_file"):
        path = getattr(config, key)
        if path is not None:
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise ConfigError(source, key, f"cannot read {path} ({exc.strerror})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        # Checked on its own first: load_cert_chain's errors do not say which file is at fault.
        ssl.create_default_context(cafile=config.tls_cert_file)
    except ssl.SSLError as exc:
        raise ConfigError(source, "tls_cert_file", f"expected a PEM certificate in {config.tls_cert_file} ({exc.reason})") from None
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except ssl.SSLError as exc:
        raise ConfigError(source, "tls_key_file",
                          f"expected the PEM private key of {config.tls_cert_file} in {config.tls_key_file} ({exc.reason})") from None
    if config.tls_ca_cert_file is not None:
        try:
            context.load_verify_locations(cafile=config.tls_ca_cert_file)
        except ssl.SSLError as exc:
            raise ConfigError(source, "tls_ca_cert_file",
                              f"expected PEM CA certificates in {config.tls_ca_cert_file} ({exc.reason})") from None
    context.verify_mode = VERIFY_MODES[config.tls_auth_clients]
    return context
