"""What every node needs before the other roles: the tools they and their checks call.

A minimal Debian lacks procps (sysctl, pgrep), curl (health checks) and logrotate. Every host gets
this role first, so a host that runs no supported Debian release is refused here, before any change.
"""

from pydantic import Field

from pyinfra.api import deploy

from homelab.config import StrictModel
from roles.common import node_release, role_settings
from roles.install import apt_packages

BASE_PACKAGES = ["procps", "iproute2", "curl", "ca-certificates", "logrotate"]


class Settings(StrictModel):
    """Group data key `base`."""

    extra_packages: list[str] = Field(default_factory=list)


@deploy("Base packages")
def apply() -> None:
    settings = role_settings("base", Settings)
    node_release()
    apt_packages("Base tools", BASE_PACKAGES + settings.extra_packages)
