# -------------------------------------------------------------
# carpd formula: everything carpd needs on a FreeBSD router
# -------------------------------------------------------------
# Settings: map.jinja (defaults.yaml + pillar carpd). Each part can
# also be applied alone (state.apply carpd.syslog, ...).

include:
  - carpd.install
  - carpd.kmod
  - carpd.config
  - carpd.devd
  - carpd.syslog
  - carpd.service
  - carpd.legacy
