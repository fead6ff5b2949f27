"""The vault: lab secrets decrypt with the committed test password, and reach a node only as files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from homelab.config import ConfigError
from homelab.vault import decrypt_vault, load_vault

REPO = Path(__file__).resolve().parents[1]
LAB_VAULT = REPO / "secrets" / "lab.vault.yml"
LAB_PASSWORD = REPO / "secrets" / "lab.vault-password"
PYINFRA = Path(sys.executable).parent / "pyinfra"

# The names the services and roles ask for (the shared secrets contract).
SECRET_NAMES = {
    "slack_bot_token", "faxplus_token", "alertmanager_webhook_token", "fax_webhook_token",
    "grafana_admin_password", "toy_redis_password",
}


def encrypt(tmp_path: Path, plaintext: str, password: str = "pw") -> tuple[Path, Path]:
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")
    vault_file = tmp_path / "vault.yml"
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password.encode()))])
    vault_file.write_bytes(vault.encrypt(plaintext))
    return vault_file, password_file


def test_lab_vault_holds_every_secret_name():
    secrets = load_vault("secrets/lab.vault.yml", "secrets/lab.vault-password")
    assert SECRET_NAMES <= set(secrets)
    assert all(isinstance(value, str) and value for value in secrets.values())


def test_no_secret_value_is_committed_in_plain_text():
    secrets = load_vault(LAB_VAULT, LAB_PASSWORD)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        text = path.read_bytes()
        leaked = [key for key, value in secrets.items() if value.encode() in text]
        assert not leaked, f"{name} holds the plain-text value of {leaked}"


def test_wrong_password_is_one_line_naming_the_files(tmp_path):
    vault_file, _ = encrypt(tmp_path, 'slack_bot_token: "xoxb-sensitive"\n', password="right")
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong\n")
    with pytest.raises(ConfigError) as err:
        load_vault(vault_file, wrong)
    message = str(err.value)
    assert "\n" not in message
    assert str(vault_file) in message and str(wrong) in message and "password" in message
    assert "xoxb-sensitive" not in message


def test_plain_text_secrets_file_is_refused(tmp_path):
    plain = tmp_path / "vault.yml"
    plain.write_text('slack_bot_token: "xoxb-sensitive"\n')
    (tmp_path / "password").write_text("pw\n")
    with pytest.raises(ConfigError, match="expected an ansible-vault encrypted file"):
        load_vault(plain, tmp_path / "password")


@pytest.mark.parametrize(
    ("plaintext", "expected"),
    [
        ("- just\n- a list\n", "expected a mapping of secret name -> string value"),
        ("toy_redis_password: 1234\n", "toy_redis_password: expected a non-empty string value"),
        ('grafana_admin_password: ""\n', "grafana_admin_password: expected a non-empty string value"),
    ],
)
def test_malformed_vault_content_names_the_key(tmp_path, plaintext, expected):
    vault_file, password_file = encrypt(tmp_path, plaintext)
    with pytest.raises(ConfigError, match=expected):
        load_vault(vault_file, password_file)


def test_vault_written_with_a_vault_id_reads_as_ansible_wrote_it(tmp_path):
    """ansible-vault --vault-id writes format 1.2 (the id in the header); load_vault reads it."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault_file, password_file = tmp_path / "vault.yml", tmp_path / "password"
    password_file.write_text("pw\n")
    vault_file.write_bytes(VaultLib([("prod", VaultSecret(b"pw"))]).encrypt(
        'slack_bot_token: "xoxb-1"\n' + 'toy_redis_password: "' + "p" * 500 + '"\n', vault_id="prod"))
    assert vault_file.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;prod\n")
    assert load_vault(vault_file, password_file) == {"slack_bot_token": "xoxb-1", "toy_redis_password": "p" * 500}


def test_lab_vault_reads_as_ansible_decrypts_it():
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    password = LAB_PASSWORD.read_bytes().strip()
    expected = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))]).decrypt(LAB_VAULT.read_bytes())
    assert decrypt_vault(LAB_VAULT.read_bytes(), password) == expected


def test_damaged_vault_is_refused_in_one_line(tmp_path):
    """A changed byte of the ciphertext fails its HMAC: refused like a wrong password, nothing decrypted."""
    vault_file, password_file = encrypt(tmp_path, 'slack_bot_token: "xoxb-sensitive"\n')
    header, body = vault_file.read_bytes().split(b"\n", 1)
    last = body.rstrip()[-1:]
    vault_file.write_bytes(header + b"\n" + body.rstrip()[:-1] + (b"0" if last != b"0" else b"1") + b"\n")
    with pytest.raises(ConfigError) as err:
        load_vault(vault_file, password_file)
    assert "cannot decrypt" in str(err.value) and "\n" not in str(err.value)
    assert "xoxb-sensitive" not in str(err.value)


def test_unknown_vault_cipher_is_refused_in_one_line(tmp_path):
    vault_file, password_file = encrypt(tmp_path, 'slack_bot_token: "x"\n')
    vault_file.write_bytes(vault_file.read_bytes().replace(b";AES256", b";AES128", 1))
    with pytest.raises(ConfigError, match="cannot decrypt"):
        load_vault(vault_file, password_file)


def test_reading_the_vault_leaves_ansible_unimported():
    """A deploy reads the vault on every run; importing ansible for it cost a third of a second."""
    code = ("import sys; from homelab.vault import load_vault; "
            f"load_vault({str(LAB_VAULT)!r}, {str(LAB_PASSWORD)!r}); "
            "print(sorted(name for name in sys.modules if name.split('.')[0] == 'ansible'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_missing_password_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the vault password file"):
        load_vault(LAB_VAULT, tmp_path / "absent")


DEPLOY = """
from roles.secrets import secret_file
secret_file(name="slack token file", dest={dest!r}, secret={secret!r}, mode={mode!r})
"""


def run_secret_deploy(tmp_path: Path, dest: Path, secret: str, mode: str = "0600",
                      vault: Path = LAB_VAULT) -> subprocess.CompletedProcess:
    deploy = tmp_path / "deploy_secret.py"
    deploy.write_text(DEPLOY.format(dest=str(dest), secret=secret, mode=mode))
    return subprocess.run(
        [str(PYINFRA), "-y", "-vvv", "@local", str(deploy),
         "--data", f"vault_file={vault}", "--data", f"vault_password_file={LAB_PASSWORD}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="writes a root-owned file through pyinfra's @local connector")
def test_secret_file_writes_the_value_0600_without_showing_it(tmp_path):
    value = load_vault(LAB_VAULT, LAB_PASSWORD)["slack_bot_token"]
    dest = tmp_path / "slack-token"
    dest.write_text("old value\n")
    dest.chmod(0o644)  # an old, too-open file is tightened too

    first = run_secret_deploy(tmp_path, dest, "slack_bot_token")
    assert first.returncode == 0, first.stderr[-3000:]
    assert dest.read_text() == value
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert value not in first.stdout + first.stderr  # even at -vvv, which prints every command

    written = dest.stat().st_mtime_ns
    second = run_secret_deploy(tmp_path, dest, "slack_bot_token")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[@local] No changes" in second.stdout + second.stderr
    assert dest.stat().st_mtime_ns == written


@pytest.mark.skipif(os.geteuid() != 0, reason="runs pyinfra's @local connector")
def test_secret_file_for_an_unknown_name_stops_with_one_line(tmp_path):
    dest = tmp_path / "nothing"
    result = run_secret_deploy(tmp_path, dest, "no_such_secret")
    assert result.returncode != 0
    assert "no_such_secret: secret is missing from the vault" in result.stdout + result.stderr
    assert not dest.exists()
