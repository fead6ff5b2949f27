"""The project's secrets: one ansible-vault encrypted YAML mapping per cluster, decrypted at deploy time.

``secrets/lab.vault.yml`` (password in the committed, test-only ``secrets/lab.vault-password``)
serves the lab; the real cluster's vault is encrypted with a password file kept outside the repo
(see secrets/README.md). Each host's data names them: ``vault_file`` and ``vault_password_file``,
relative to the repo root (or absolute, ``~`` allowed).

Values only ever travel from here to ``roles.secrets.secret_file``, which uploads them as files:
they are never formatted into errors, logs, operation names or command lines.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from homelab.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_path(path: str | Path) -> Path:
    """A path from host data: absolute as given, otherwise relative to the repo root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _read_password(password_file: Path) -> bytes:
    try:
        password = password_file.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(password_file, "", f"cannot read the vault password file ({exc.strerror})") from None
    if not password:
        raise ConfigError(password_file, "", "the vault password file is empty")
    return password


@lru_cache(maxsize=8)
def _load_cached(vault_file: Path, password_file: Path, mtime_ns: int) -> dict[str, str]:
    # Imported here: loading ansible's constants takes a moment that only deploys should pay.
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.errors import AnsibleError
    from ansible.parsing.vault import VaultLib, VaultSecret, is_encrypted

    try:
        vaulttext = vault_file.read_bytes()
    except OSError as exc:
        raise ConfigError(vault_file, "", f"cannot read the vault ({exc.strerror})") from None
    if not is_encrypted(vaulttext):
        raise ConfigError(vault_file, "", "expected an ansible-vault encrypted file; secrets are never kept in plain text")
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(_read_password(password_file)))])
    try:
        plaintext = vault.decrypt(vaulttext)
    except AnsibleError:
        raise ConfigError(vault_file, "", f"cannot decrypt with the password in {password_file} (wrong password file?)") from None
    try:
        data = yaml.safe_load(plaintext)
    except yaml.YAMLError:
        # The parser's message may quote the secret text: say where, not what.
        raise ConfigError(vault_file, "", "the decrypted vault is not valid YAML (fix it with ansible-vault edit)") from None
    if not isinstance(data, dict):
        raise ConfigError(vault_file, "", "expected a mapping of secret name -> string value")
    for name, value in data.items():
        if not isinstance(name, str) or not isinstance(value, str) or not value:
            raise ConfigError(vault_file, str(name), "expected a non-empty string value (quote it in the vault)")
    return dict(data)


def load_vault(vault_file: str | Path, password_file: str | Path) -> dict[str, str]:
    """Decrypt an ansible-vault YAML mapping of secret name -> value; any problem is one ConfigError line."""
    vault_path, password_path = repo_path(vault_file), repo_path(password_file)
    try:
        mtime_ns = vault_path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(vault_path, "", f"cannot read the vault ({exc.strerror})") from None
    return _load_cached(vault_path, password_path, mtime_ns)


def host_secret(name: str) -> str:
    """Secret ``name`` from the current pyinfra host's vault (host data vault_file, vault_password_file)."""
    from pyinfra import host

    where = f"inventory data for {host.name}"
    vault_file = host.data.get("vault_file")
    password_file = host.data.get("vault_password_file")
    if not vault_file:
        raise ConfigError(where, "vault_file", "required to deploy secrets (e.g. secrets/lab.vault.yml)")
    if not password_file:
        raise ConfigError(where, "vault_password_file", "required to decrypt vault_file")
    secrets = load_vault(vault_file, password_file)
    if name not in secrets:
        raise ConfigError(repo_path(vault_file), name, "secret is missing from the vault (add it with ansible-vault edit)")
    return secrets[name]


def store_secrets(vault_file: str | Path, password_file: str | Path, updates: dict[str, str]) -> None:
    """Add or replace secrets in an existing vault, re-encrypted with its password (homelab pki uses it).

    Written to a new file that then replaces the vault, so an interrupted write leaves the old vault whole.
    """
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault_path, password_path = repo_path(vault_file), repo_path(password_file)
    secrets = {**load_vault(vault_path, password_path), **updates}
    plaintext = yaml.safe_dump(secrets, default_style='"', sort_keys=True, width=1 << 16)
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(_read_password(password_path)))])
    staged = vault_path.with_name(vault_path.name + ".new")
    staged.write_bytes(vault.encrypt(plaintext))
    staged.replace(vault_path)
