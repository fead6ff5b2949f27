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


# ansible-vault's file header: format 1.1, or 1.2 (which adds a vault id), both AES256.
VAULT_HEADER = b"$ANSIBLE_VAULT;"
VAULT_FORMATS = (b"1.1", b"1.2")
VAULT_CIPHER = b"AES256"
# AES256 format's key derivation: PBKDF2-HMAC-SHA256, this many rounds, giving a cipher key and an
# HMAC key of KEY_BYTES each and then a counter block of COUNTER_BYTES.
VAULT_KDF_ROUNDS = 10000
KEY_BYTES = 32
COUNTER_BYTES = 16


class _NotDecrypted(Exception):
    pass


def decrypt_vault(vaulttext: bytes, password: bytes) -> bytes:
    """The plaintext of an ansible-vault file (format 1.1 or 1.2, AES256), as ansible's VaultLib reads it.

    The format, from ansible's documentation (vault_guide/vault_using_encrypted_content.rst, "Format
    of files encrypted with Ansible Vault", and ansible.parsing.vault's VaultAES256): a header line,
    then the hex of "hex(salt)\nhex(hmac)\nhex(ciphertext)"; PBKDF2-HMAC-SHA256 derives an AES key,
    an HMAC key and the counter block from the password and salt; the HMAC-SHA256 of the ciphertext
    must match before AES-CTR decrypts it, PKCS7-padded. With the `cryptography` primitives that
    ansible itself calls, because importing ansible's VaultLib loads its whole configuration system
    (a third of a second, on every deploy); ansible-vault still writes and edits the files.
    Raises _NotDecrypted for a wrong password or damaged text.
    """
    from binascii import Error as HexError, unhexlify

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, hmac, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    header, _, body = vaulttext.partition(b"\n")
    fields = header.strip().split(b";")
    if len(fields) < 3 or fields[1] not in VAULT_FORMATS or fields[2] != VAULT_CIPHER:
        raise _NotDecrypted("unsupported format")
    try:
        salt_hex, mac_hex, ciphertext_hex = unhexlify(b"".join(body.split())).split(b"\n", 2)
        salt, mac, ciphertext = unhexlify(salt_hex), unhexlify(mac_hex), unhexlify(ciphertext_hex)
    except (HexError, ValueError):
        raise _NotDecrypted("damaged") from None
    derived = PBKDF2HMAC(algorithm=hashes.SHA256(), length=2 * KEY_BYTES + COUNTER_BYTES, salt=salt,
                         iterations=VAULT_KDF_ROUNDS).derive(password)
    cipher_key, mac_key, counter = derived[:KEY_BYTES], derived[KEY_BYTES:2 * KEY_BYTES], derived[2 * KEY_BYTES:]
    check = hmac.HMAC(mac_key, hashes.SHA256())
    check.update(ciphertext)
    try:
        check.verify(mac)
    except InvalidSignature:
        raise _NotDecrypted("wrong password") from None
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CTR(counter)).decryptor()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        return unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        raise _NotDecrypted("damaged") from None


@lru_cache(maxsize=8)
def _load_cached(vault_file: Path, password_file: Path, mtime_ns: int) -> dict[str, str]:
    try:
        vaulttext = vault_file.read_bytes()
    except OSError as exc:
        raise ConfigError(vault_file, "", f"cannot read the vault ({exc.strerror})") from None
    if not vaulttext.startswith(VAULT_HEADER):
        raise ConfigError(vault_file, "", "expected an ansible-vault encrypted file; secrets are never kept in plain text")
    try:
        plaintext = decrypt_vault(vaulttext, _read_password(password_file))
    except _NotDecrypted:
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
