"""OCI images of our two services, built with the docker SDK from the wheels the nodes get.

An image is the Debian base (homelab.containers.base) plus one layer: the service's venv at the
same path as on a node (/opt/<service>/current, installed with `pip --no-index` from
roles.python_app's wheels), its system user, and the healthcheck. It runs as that user, works with
a read-only root file system, and holds no secret: config, secrets, data and log folders are
mounted at run time. The build has no network at all, so nothing can come from elsewhere.

The same wheels and base give the same layers (time stamps fixed, byte code hash-based); the
labels say which version, git revision and time an image was built from and at.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import docker

from homelab.config import ConfigError
from homelab.containers import base
from homelab.releases import RELEASES
from roles import python_app
from roles.common import REPO_ROOT, render

HEALTHCHECK_SOURCE = Path(__file__).with_name("healthcheck.py")
# Debian's python3-venv (on the control machine) ships pip as a wheel; the build runs pip from it.
PYTHON_WHEELS = Path("/usr/share/python-wheels")
REPOSITORY = "homelab"


@dataclass(frozen=True)
class ImageSpec:
    """One service's image: the app (names and paths as on a node) and the config it runs with."""

    app: python_app.PythonApp
    config_path: str

    @property
    def name(self) -> str:
        return self.app.service

    @property
    def version(self) -> str:
        return _distribution_version(self.app.source_dir)

    @property
    def tag(self) -> str:
        return f"{REPOSITORY}/{self.name}:{self.version}"

    @property
    def healthcheck_path(self) -> str:
        return f"{self.app.home}/healthcheck.py"


def specs() -> dict[str, ImageSpec]:
    """Image name -> spec; the paths come from the roles, so image and node agree."""
    from roles import alert_relay, toy_redis

    return {
        spec.name: spec
        for spec in (ImageSpec(toy_redis.APP, toy_redis.CONFIG_PATH), ImageSpec(alert_relay.APP, alert_relay.CONFIG_PATH))
    }


def spec_named(name: str) -> ImageSpec:
    known = specs()
    if name not in known:
        raise ConfigError("homelab image", "name", f"expected one of {', '.join(known)}, got {name!r}")
    return known[name]


def _distribution_version(source_dir: Path) -> str:
    import tomllib

    return tomllib.loads((source_dir / "pyproject.toml").read_text())["project"]["version"]


def git_revision() -> str:
    """HEAD's commit, with -dirty when the work tree has uncommitted changes (the image may hold them)."""
    result = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=40"],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def labels(spec: ImageSpec, built_at: datetime) -> dict[str, str]:
    """OCI annotations (image-spec annotations.md); set on the image only, so they never bust the layer cache."""
    return {
        "org.opencontainers.image.title": spec.name,
        "org.opencontainers.image.version": spec.version,
        "org.opencontainers.image.revision": git_revision(),
        "org.opencontainers.image.created": built_at.isoformat(timespec="seconds"),
        "org.opencontainers.image.vendor": "homelab-ops",
    }


def pip_wheel() -> Path:
    found = sorted(PYTHON_WHEELS.glob("pip-*.whl"))
    if not found:
        raise ConfigError(PYTHON_WHEELS, "", "expected Debian's pip wheel here: apt-get install python3-venv "
                                             "(./dev setup does it)")
    return found[-1]


def render_dockerfile(spec: ImageSpec, base_tag: str, pip_wheel_name: str) -> str:
    return render(
        "images/Dockerfile.j2",
        base=base_tag,
        pip_wheel=pip_wheel_name,
        distribution=spec.app.distribution,
        service=spec.name,
        user=spec.app.service,
        home=spec.app.home,
        venv=spec.app.current,
        binary=spec.app.binary(),
        config_path=spec.config_path,
        healthcheck=spec.healthcheck_path,
        source_date_epoch=python_app._SOURCE_DATE_EPOCH,
    )


def wheel_target() -> python_app.WheelTarget:
    """The wheels an image needs: for the Python of the image base's Debian release, this CPU."""
    release = next(release for release in RELEASES.values() if release.codename == base.SUITE)
    return python_app.WheelTarget.for_release(release, platform.machine())


def build(client: docker.DockerClient, spec: ImageSpec, *, no_cache: bool = False, log=print) -> docker.models.images.Image:
    """Build ``spec``'s image in the engine behind ``client`` and tag it; returns the image."""
    tree = base.ensure_tree(log)
    target = wheel_target()
    if base.python_version(tree) != target.python:
        raise ConfigError(tree, "", f"the image base has Python {base.python_version(tree)}, but the wheels are "
                                    f"built for Debian {base.SUITE}'s Python {target.python}")
    base_tag = base.ensure_imported(client, tree)
    wheel_set = python_app.build_wheels(spec.app.source_dir, target)
    pip = pip_wheel()
    with tempfile.TemporaryDirectory(prefix="homelab-image-") as scratch:
        context = Path(scratch)
        shutil.copytree(wheel_set.folder, context / "wheels", ignore=shutil.ignore_patterns(python_app.BUILT_MARKER))
        shutil.copy2(pip, context / pip.name)
        shutil.copy2(HEALTHCHECK_SOURCE, context / "healthcheck.py")
        (context / "Dockerfile").write_text(render_dockerfile(spec, base_tag, pip.name))
        try:
            image, _ = client.images.build(
                path=str(context), tag=spec.tag, labels=labels(spec, datetime.now(timezone.utc)),
                network_mode="none", pull=False, rm=True, forcerm=True, nocache=no_cache,
            )
        except docker.errors.BuildError as exc:
            output = [str(line.get("stream", "")).strip() for line in exc.build_log if line.get("stream")]
            detail = next((line for line in reversed(output) if line), "")
            raise ConfigError(f"image {spec.name}", "", f"docker build failed: {exc.msg} {detail}".strip()) from None
    return image


def tarball_name(spec: ImageSpec) -> str:
    return f"{spec.name}-{spec.version}.tar"


def save(client: docker.DockerClient, name: str, folder: Path) -> Path:
    """Write the image to ``folder``/<name>-<version>.tar (tag and all layers), for `docker load` on a
    machine without a registry; one image per file, so a node receives only the one it runs."""
    spec = spec_named(name)
    try:
        image = client.images.get(spec.tag)
    except docker.errors.ImageNotFound:
        raise ConfigError("homelab image save", spec.tag, "not built yet (run `homelab image build` first)") from None
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / tarball_name(spec)
    partial = destination.with_name(destination.name + ".partial")
    with partial.open("wb") as out:
        for chunk in image.save(named=spec.tag):
            out.write(chunk)
    partial.rename(destination)
    return destination
