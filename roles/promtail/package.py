"""What Grafana Labs' promtail .deb installs, read from grafana/loki at v3.5.0 (the version group data pins).

- tools/packaging/nfpm.jsonnet: the binary goes to /usr/bin/promtail, the unit to
  /etc/systemd/system/promtail.service, a minimal config to /etc/promtail/config.yml; the package
  version is the release tag as nfpm reads it (no release field), so apt shows "3.5.0".
- tools/packaging/nfpm.sh: built with `nfpm package -p deb`, whose default file name is
  <name>_<version>_<arch>.deb (Debian architecture names: amd64, arm64).
- tools/packaging/promtail.service: `User=promtail`, no Group=, `ExecStart=/usr/bin/promtail
  -config.file /etc/promtail/config.yml`.
- tools/packaging/promtail-postinstall.sh: `adduser --no-create-home --system --shell /bin/false
  promtail`, which on Debian gives promtail the primary group nogroup and no group of its own.
- clients/cmd/promtail/main.go: `-check-syntax` ("Validate the config file of its syntax").
"""

from roles.grafana_repo import Upstream, VendorPackage

PACKAGE = VendorPackage(
    name="promtail",
    read_from=(Upstream("grafana/loki", "v3.5.0", (
        "tools/packaging/nfpm.jsonnet", "tools/packaging/nfpm.sh", "tools/packaging/promtail.service",
        "tools/packaging/promtail-postinstall.sh", "clients/cmd/promtail/main.go")),),
    debian_revision=None,
    asset="promtail_{debian_version}_{arch}.deb",
    unit="promtail.service",
    exec_start="/usr/bin/promtail -config.file /etc/promtail/config.yml",
    binary="/usr/bin/promtail",
    user="promtail",
    group="nogroup",
    user_setup="adduser --no-create-home --system --shell /bin/false promtail",
    config_file="/etc/promtail/config.yml",
    check_args="-check-syntax -config.file={staged}",
)
