"""What the images promise: same inputs give the same layers, a non-root user, OCI labels, a
healthcheck, no installer or compiler, and no secret or key in any layer or in the image config."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from homelab.containers import base, images
from homelab.lab.inventory import inventory_groups
from homelab.vault import load_vault

from .conftest import image_user_ids

pytestmark = pytest.mark.slow

# A PEM or OpenSSH private key: the header, optional headers such as Proc-Type, then base64. Libraries
# (libgnutls) hold the bare header as a parsing constant; that is not a key.
KEY_MATERIAL = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n(?:[A-Za-z-]+: [^\n]*\n)*\s*[A-Za-z0-9+/=]{40}")
# Programs that build or install software; none may be in an image.
BUILD_TOOLS = ["gcc", "cc", "c++", "make", "ld", "pip", "pip3", "python3-config", "x86_64-linux-gnu-gcc"]


def lab_secrets() -> dict[str, str]:
    """The values in the vault the lab inventory's hosts deploy with."""
    from tests.conftest import LAB_INVENTORY

    vaults = {(data["vault_file"], data["vault_password_file"]) for data, _ in inventory_groups(LAB_INVENTORY).values()}
    return {name: value for vault in vaults for name, value in load_vault(*vault).items()}


def find_secrets(saved: Path, secrets: dict[str, str]) -> list[str]:
    """Every place in a `docker save` tarball (configs, manifests, each file of each layer) that holds
    one of ``secrets``' values or a private key.

    Debian's libgnutls embeds the public test keys of its self-test; a key found in a file that dpkg
    installed and that still has dpkg's checksum came from Debian's archive, not from us.
    """
    needles = {name: value.encode() for name, value in secrets.items()}
    found, keys, debian_files = [], [], {}
    with tarfile.open(saved) as outer:
        for member in outer:
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()
            try:
                # docker save: <id>/layer.tar; an OCI layout (newer engines): blobs/sha256/<digest>
                is_layer = member.name.endswith("layer.tar") or member.name.startswith("blobs/")
                layer = tarfile.open(fileobj=io.BytesIO(data)) if is_layer else None
            except tarfile.ReadError:
                layer = None  # a JSON blob
            files = ((f"{member.name}:{entry.name}", entry.name.removeprefix("./"), layer.extractfile(entry).read())
                     for entry in layer if entry.isfile()) if layer else [(member.name, None, data)]
            for where, path, content in files:
                found += [f"{where}: secret {name}" for name, needle in needles.items() if needle in content]
                if KEY_MATERIAL.search(content):
                    keys.append((where, path, hashlib.md5(content).hexdigest()))
                if path and path.startswith("var/lib/dpkg/info/") and path.endswith(".md5sums"):
                    for line in content.decode(errors="replace").splitlines():
                        digest, _, listed = line.partition("  ")
                        debian_files[listed] = digest
    found += [f"{where}: private key material" for where, path, digest in keys if debian_files.get(path) != digest]
    return found


SELF_TEST_KEY = b"\x00-----BEGIN PRIVATE KEY-----\nMGoCAQAwIQYIKoUDBwEBAQIwFQYJKoUDBwECAQIBBggqhQMHAQECAwRCBECjFpvp\n"


def test_the_secret_scan_finds_values_and_keys_inside_layers(tmp_path):
    """The scanner itself: a value or a key hidden in a layer of a saved image is reported; a key in
    a file exactly as a Debian package installed it is not."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, content in (("etc/app/token", b"prefix s3cr3t-value suffix"),
                              ("root/.ssh/id_ed25519", b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
                                                       b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"),
                              ("etc/ssl/private/legacy.pem", b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
                                                             b"DEK-Info: AES-128-CBC,1A2B\n\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/"
                                                             b"ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"),
                              ("usr/lib/libtls.so", b"\x00-----BEGIN RSA PRIVATE KEY-----\x00-----END RSA\x00"),
                              ("usr/lib/libselftest.so", SELF_TEST_KEY),
                              ("var/lib/dpkg/info/libselftest.md5sums",
                               f"{hashlib.md5(SELF_TEST_KEY).hexdigest()}  usr/lib/libselftest.so\n".encode()),
                              ("etc/clean", b"nothing here")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    saved = tmp_path / "image.tar"
    with tarfile.open(saved, mode="w") as tar:
        info = tarfile.TarInfo("abc123/layer.tar")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    assert find_secrets(saved, {"token": "s3cr3t-value", "other": "absent"}) == [
        "abc123/layer.tar:etc/app/token: secret token",
        "abc123/layer.tar:root/.ssh/id_ed25519: private key material",
        "abc123/layer.tar:etc/ssl/private/legacy.pem: private key material",
    ]


def test_no_secret_or_key_in_any_layer_of_either_image(built_images):
    secrets = lab_secrets()
    assert secrets, "the lab vault should hold the values to look for"
    assert set(built_images.tarballs) == set(images.specs())
    for tarball in built_images.tarballs.values():
        assert find_secrets(tarball, secrets) == []


def test_same_inputs_give_the_same_layers(built_images):
    """The base tree imported again, and a rebuild without the layer cache (new time stamps, new
    byte-code compile), give identical layers."""
    spec = images.specs()["toy-redis"]
    first = built_images.built[spec.name].attrs["RootFS"]["Layers"]
    reimported = base.import_tree(built_images.client, base.ensure_tree(), "homelab-test/base-again:1")
    assert reimported.attrs["RootFS"]["Layers"] == first[:1]
    again = images.build(built_images.client, spec, no_cache=True)
    assert again.attrs["RootFS"]["Layers"] == first
    assert len(first) == 2, "base plus one layer with the service"


@pytest.mark.parametrize("name", ["toy-redis", "alert-relay"])
def test_image_labels_user_and_healthcheck(built_images, name):
    spec = images.specs()[name]
    image = built_images.client.images.get(spec.tag)
    labels = image.labels
    assert labels["org.opencontainers.image.version"] == spec.version
    # The commit built from; "-dirty" depends on the work tree at build time, not on what is tested.
    assert labels["org.opencontainers.image.revision"].removesuffix("-dirty") == images.git_revision().removesuffix("-dirty")
    created = datetime.fromisoformat(labels["org.opencontainers.image.created"])
    assert timedelta(0) <= datetime.now(timezone.utc) - created < timedelta(hours=2)
    config = image.attrs["Config"]
    assert config["User"] == spec.app.service
    assert image_user_ids(built_images.client, spec.tag)[0] != 0
    assert config["Entrypoint"] == [spec.app.binary()]
    assert config["Cmd"] == ["--config", spec.config_path]
    assert spec.healthcheck_path in config["Healthcheck"]["Test"]


@pytest.mark.parametrize("name", ["toy-redis", "alert-relay"])
def test_no_build_tools_or_installer_in_the_image(built_images, name):
    spec = images.specs()[name]
    script = (
        f"for tool in {' '.join(BUILD_TOOLS)}; do command -v $tool; done; "
        f"find / -xdev \\( -name '*.whl' -o -name 'pip' -o -name 'ensurepip' \\) -print; "
        f"{spec.app.current}/bin/python -c 'import pip' 2>/dev/null && echo importable: pip; true"
    )
    output = built_images.client.containers.run(spec.tag, entrypoint=["sh", "-c", script], network_mode="none",
                                                remove=True)
    assert output.decode().split() == []
