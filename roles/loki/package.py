"""What Grafana Labs' loki .deb installs, read from grafana/loki at v3.5.0 (the version group data pins).

- tools/packaging/nfpm.jsonnet: the binary goes to /usr/bin/loki, the unit to
  /etc/systemd/system/loki.service, the sample config to /etc/loki/config.yml; the package version is
  the release tag as nfpm reads it (no release field), so apt shows "3.5.0".
- tools/packaging/nfpm.sh: built with `nfpm package -p deb`, whose default file name is
  <name>_<version>_<arch>.deb (Debian architecture names: amd64, arm64).
- tools/packaging/loki.service: `User=loki`, no Group=, `ExecStart=/usr/bin/loki -config.file
  /etc/loki/config.yml`.
- tools/packaging/loki-postinstall.sh: `adduser --system --shell /bin/false loki`, which on Debian
  gives loki the primary group nogroup and no group of its own.
- pkg/loki/config_wrapper.go: `-verify-config` ("Verify config file and exits").
"""

from roles.grafana_repo import Upstream, VendorPackage

PACKAGE = VendorPackage(
    name="loki",
    read_from=(Upstream("grafana/loki", "v3.5.0", (
        "tools/packaging/nfpm.jsonnet", "tools/packaging/nfpm.sh", "tools/packaging/loki.service",
        "tools/packaging/loki-postinstall.sh", "pkg/loki/config_wrapper.go")),),
    debian_revision=None,
    asset="loki_{debian_version}_{arch}.deb",
    unit="loki.service",
    exec_start="/usr/bin/loki -config.file /etc/loki/config.yml",
    binary="/usr/bin/loki",
    user="loki",
    group="nogroup",
    user_setup="adduser --system --shell /bin/false loki",
    config_file="/etc/loki/config.yml",
    check_args="-verify-config -config.file={staged}",
)
