#   -------------------------------------------------------------
#   carpd formula — install the binary and its rc.d script
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    salt/carpd/install.sls
#   -------------------------------------------------------------
# install:method pkg (the default) installs the package, which brings
# the binary, rc.d script, man pages, sample configuration and an
# example devd rule (inactive). install:method binary copies a prebuilt
# binary and the formula's copy of rc.d/carpd, for sites without a
# package yet.
{%- from 'carpd/map.jinja' import carpd with context %}

{%- if carpd.install.method == 'pkg' %}

carpd-package:
  pkg.installed:
    - name: {{ carpd.install.pkg }}

{%- elif carpd.install.method == 'binary' %}

{{ carpd.paths.binary }}:
  file.managed:
    - source: {{ carpd.install.binary_source }}
{%-   if carpd.install.binary_source_hash %}
    - source_hash: {{ carpd.install.binary_source_hash }}
{%-   endif %}
    - user: root
    - group: wheel
    - mode: '0555'

{{ carpd.paths.rc_script }}:
  file.managed:
    - source: salt://carpd/files/rc.d/carpd
    - user: root
    - group: wheel
    - mode: '0555'

{%- else %}

carpd-install-method:
  test.fail_without_changes:
    - name: >-
        carpd:install:method is {{ carpd.install.method }}: use pkg (install
        the carpd package) or binary (with carpd:install:binary_source)

{%- endif %}
