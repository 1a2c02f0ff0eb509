#   -------------------------------------------------------------
#   carpd formula — everything carpd needs on a FreeBSD router
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    salt/carpd/init.sls
#   -------------------------------------------------------------
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
