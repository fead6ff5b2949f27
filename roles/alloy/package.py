"""What Grafana Labs' alloy .deb installs, read from grafana/alloy at v1.10.0 (the version group data pins).

- tools/make/packaging.mk: `fpm ... -n alloy --iteration 1` (ALLOY_PACKAGE_RELEASE := 1), so apt
  shows "1.10.0-1"; the asset is dist/alloy-<version>-1.<deb arch>.deb (ALLOY_PACKAGE_PREFIX), e.g.
  alloy-1.10.0-1.amd64.deb; the binary goes to /usr/bin/alloy, the config to /etc/alloy/config.alloy,
  the environment file to /etc/default/alloy, the unit to /usr/lib/systemd/system/alloy.service.
- packaging/deb/alloy.service: `User=alloy`, `EnvironmentFile=/etc/default/alloy`,
  `ExecStart=/usr/bin/alloy run $CUSTOM_ARGS --storage.path=/var/lib/alloy/data $CONFIG_FILE`,
  `ExecReload=/usr/bin/env kill -HUP $MAINPID`.
- packaging/deb/control/postinst: `groupadd -r alloy`, `useradd -m -r -g alloy -d /var/lib/alloy`,
  adds alloy to adm and systemd-journal; /etc/alloy is root:alloy 0770.
- packaging/environment-file: CONFIG_FILE, CUSTOM_ARGS, RESTART_ON_UPGRADE.
- internal/alloycli/cmd_validate.go: `alloy validate [flags] file`; cmd_run.go: --server.http.listen-addr,
  --disable-reporting, --storage.path.
"""

from roles.grafana_repo import Upstream, VendorPackage

PACKAGE = VendorPackage(
    name="alloy",
    read_from=(Upstream("grafana/alloy", "v1.10.0", (
        "tools/make/packaging.mk", "packaging/deb/alloy.service", "packaging/deb/control/postinst",
        "packaging/environment-file", "internal/alloycli/cmd_validate.go", "internal/alloycli/cmd_run.go")),),
    debian_revision="1",
    asset="alloy-{debian_version}.{arch}.deb",
    unit="alloy.service",
    exec_start="/usr/bin/alloy run $CUSTOM_ARGS --storage.path=/var/lib/alloy/data $CONFIG_FILE",
    binary="/usr/bin/alloy",
    user="alloy",
    group="alloy",
    user_setup="groupadd -r alloy && useradd -m -r -g alloy -d /var/lib/alloy -s /sbin/nologin -c 'alloy user' alloy "
               "&& usermod -a -G adm alloy && usermod -a -G systemd-journal alloy",
    config_file="/etc/alloy/config.alloy",
    check_args="validate {staged}",
    extra_groups=("adm", "systemd-journal"),
)
# The unit's EnvironmentFile: CONFIG_FILE and CUSTOM_ARGS fill its ExecStart.
ENVIRONMENT_FILE = "/etc/default/alloy"
# Where Alloy's components keep state (read positions): the ExecStart's --storage.path.
STORAGE_PATH = PACKAGE.exec_start_option("--storage.path")
