"""Writing vault secrets to nodes as files, the one way secrets reach a node.

A service reads its secret from a file (e.g. alert-relay's slack_token_file) rather than from its
command line or environment, which other users and logs can see. The value is decrypted on the
control machine (homelab.vault) and uploaded as file content: the operation's arguments, name and
commands carry only the secret's name and the path.
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import Sha1File
from pyinfra.operations import files

from homelab.vault import host_secret
from roles.common import sha1


@operation()
def secret_file(dest: str, secret: str, user: str = "root", group: str = "root", mode: str = "0600"):
    """Ensure ``dest`` holds vault secret ``secret`` (its name, never its value), owned and moded as given.

    + dest: the path the service reads
    + secret: the secret's name in the host's vault, e.g. ``slack_bot_token``
    + user, group, mode: the file's owner and mode; keep mode 0600 or 0640
    """
    yield from private_file._inner(dest=dest, content=BytesIO(host_secret(secret).encode()), user=user, group=group,
                                   mode=mode)


@operation()
def private_file(dest: str, content: BytesIO, user: str = "root", group: str = "root", mode: str = "0600"):
    """Ensure ``dest`` holds ``data`` (a secret made on the control machine, e.g. a TLS key), never
    readable by others: created with its mode before the content arrives.

    + dest: the path the service reads
    + content: the bytes, in a BytesIO so that no argument or log line shows them
    + user, group, mode: the file's owner and mode; keep mode 0600 or 0640
    """
    if mode not in ("0600", "0640", "0400", "0440"):
        raise ValueError(f"private_file {dest}: mode: expected 0600, 0640, 0400 or 0440, got {mode!r}")
    data = content.getvalue()
    if host.get_fact(Sha1File, path=dest) == sha1(data):
        yield from files.file._inner(path=dest, user=user, group=group, mode=mode)
        return
    # Create the file (or tighten an old one) before the content arrives, so that the upload
    # never lands in a file others may read, even for a moment.
    path = shlex.quote(dest)
    yield f"umask 077 && touch {path} && chmod {mode} {path} && chown {shlex.quote(user)}:{shlex.quote(group)} {path}"
    yield from files.put._inner(src=BytesIO(data), dest=dest, user=user, group=group, mode=mode)
