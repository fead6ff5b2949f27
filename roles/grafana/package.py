"""What Grafana Labs' grafana .deb installs (11.x), read from grafana/grafana.

The v11.6.0 tag itself could not be fetched here (the repository snapshot is over 3 GB); these are
the files of the packaging Grafana builds its 11.x packages with (pkg/build/daggerbuild), as
indexed from grafana/grafana:
- pkg/build/daggerbuild/fpm/build.go: packaging/wrappers/grafana-server and grafana-cli are copied to
  /usr/sbin, the release tree to /usr/share/grafana (so the binary is /usr/share/grafana/bin/grafana);
  `fpm --version=<tag without v>` with no --iteration, so apt shows "11.6.0"; fpm's deb file name is
  <name>_<version>_<arch>.deb, as on dl.grafana.com (grafana_11.6.0_amd64.deb).
- pkg/build/daggerbuild/pipelines (deb): packaging/deb/systemd/grafana-server.service is installed as
  /usr/lib/systemd/system/grafana-server.service, packaging/deb/default/grafana-server as
  /etc/default/grafana-server.
- packaging/deb/systemd/grafana-server.service: `User=grafana`, `Group=grafana`,
  `ExecStart=/usr/sbin/grafana-server --config=${CONF_FILE} ...`.
- packaging/wrappers/grafana-server: `exec "$GRAFANA_HOME/bin/grafana" server "$@"`;
  packaging/wrappers/grafana-cli: runs "$GRAFANA_HOME/bin/grafana" cli --homepath --config ..., with
  GRAFANA_HOME=/usr/share/grafana. Grafana's CLI documentation uses the binary's full path.
- packaging/deb/control/postinst: `addgroup --system grafana`, `adduser --system --ingroup grafana
  grafana`; /etc/grafana files root:grafana 0640; Grafana is not started on a first install.
- packaging/deb/default/grafana-server: CONF_FILE=/etc/grafana/grafana.ini, DATA_DIR=/var/lib/grafana,
  LOG_DIR=/var/log/grafana, PLUGINS_DIR=/var/lib/grafana/plugins.
- conf/defaults.ini and pkg/setting: the SQLite database is [database] path = grafana.db, relative
  to paths.data.
- pkg/cmd/grafana-cli/commands/reset_password_command.go: `admin reset-admin-password
  --password-from-stdin` reads the first line of standard input.
"""

from roles.grafana_repo import Upstream, VendorPackage

HOME = "/usr/share/grafana"
BINARY = f"{HOME}/bin/grafana"

PACKAGE = VendorPackage(
    name="grafana",
    read_from=(Upstream("grafana/grafana", "11.x packaging (main branch as indexed; v11.6.0 not fetchable here)", (
        "pkg/build/daggerbuild/fpm/build.go", "packaging/deb/systemd/grafana-server.service",
        "packaging/wrappers/grafana-server", "packaging/wrappers/grafana-cli", "packaging/deb/control/postinst",
        "packaging/deb/default/grafana-server", "conf/defaults.ini",
        "pkg/cmd/grafana-cli/commands/reset_password_command.go")),),
    debian_revision=None,
    asset="grafana_{debian_version}_{arch}.deb",
    unit="grafana-server.service",
    exec_start="/usr/sbin/grafana-server --config=${CONF_FILE} --pidfile=${PID_FILE_DIR}/grafana-server.pid "
               "--packaging=deb cfg:default.paths.logs=${LOG_DIR} cfg:default.paths.data=${DATA_DIR} "
               "cfg:default.paths.plugins=${PLUGINS_DIR} cfg:default.paths.provisioning=${PROVISIONING_CFG_DIR}",
    binary=BINARY,
    user="grafana",
    group="grafana",
    user_setup="addgroup --system grafana --quiet && adduser --system --home /usr/share/grafana --no-create-home "
               "--ingroup grafana --disabled-password --shell /bin/false grafana",
    config_file="/etc/grafana/grafana.ini",
    wrappers={"/usr/sbin/grafana-server": f"{BINARY} server", "/usr/sbin/grafana-cli": f"{BINARY} cli"},
)
DATA_DIR = "/var/lib/grafana"
LOG_DIR = "/var/log/grafana"
PLUGINS_DIR = f"{DATA_DIR}/plugins"
PROVISIONING_DIR = "/etc/grafana/provisioning"
DATABASE = f"{DATA_DIR}/grafana.db"
# Grafana's CLI on the same config and database as the server.
CLI = f"{BINARY} cli --homepath {HOME} --config {PACKAGE.config_file}"
