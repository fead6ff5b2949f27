"""A server's TLS context that follows its certificate and key files on disk."""

from __future__ import annotations

import logging
import os
import ssl
from typing import Callable


class ReloadingContext:
    """A listener's TLS context, made anew by ``load`` when the certificate or key file changed on
    disk, as exporter-toolkit rereads them: a deploy rotating the node's certificate (roles/pki)
    replaces both, and new handshakes then present the new certificate without a restart (which
    would drop every client and miss a scrape); connections already open keep theirs.

    Each new TLS connection asks for ``current()``, which compares the files' stat with the loaded
    ones' (two stat calls, small beside a handshake). A pair that ``load`` refuses with ``error``
    (the new key in place, its certificate not yet) leaves the context in use and is logged once
    (``tls_reload_failed``); the next change of either file is tried.

    The first ``load`` happens here, so a file unusable at start stops the start with the caller's
    own error."""

    def __init__(self, cert_file: str, key_file: str, load: Callable[[], ssl.SSLContext],
                 error: type[Exception], logger: logging.Logger):
        self.files, self.load, self.error, self.logger = (cert_file, key_file), load, error, logger
        self.context = load()
        self.stamp = self._stamp()

    def _stamp(self) -> tuple:
        stamps = []
        for path in self.files:
            try:
                status = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(stamps)

    def current(self) -> ssl.SSLContext:
        stamp = self._stamp()
        if stamp != self.stamp:
            # Stamped before reading: a file replaced meanwhile is read again at the next connection.
            self.stamp = stamp
            try:
                self.context = self.load()
            except self.error as exc:
                self._log(logging.WARNING, "tls_reload_failed", error=str(exc))
            else:
                self._log(logging.INFO, "tls_reloaded", cert_file=self.files[0])
        return self.context

    def _log(self, level: int, event: str, **fields) -> None:
        # The services' JSON-lines formatters write a record's `fields` next to its event.
        if self.logger.isEnabledFor(level):
            self.logger.log(level, event, extra={"fields": fields})
