#   -------------------------------------------------------------
#   carpd formula — remove what carpd replaces, step by step
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    salt/carpd/legacy.sls
#   -------------------------------------------------------------
# migration:step decides what goes (map.jinja, legacy_absent): the
# old CARP rc.conf fragment at step kernel, the old devd hook at step
# ip (with carpd's rule installed in the same run, and devd restarted
# once), the old script and migration:absent_when_done at step done.
# The site's own states for these paths must be gone first
# (docs/migration.md): a path has one owner.
{%- from 'carpd/map.jinja' import carpd with context %}
{%- if carpd.legacy_absent %}

include:
  - carpd.devd
  - carpd.syslog
{%- endif %}

{%- for path in carpd.legacy_absent %}

{{ path }}:
  file.absent:
    - name: {{ path }}
{%-   if path.startswith('/usr/local/etc/devd/') or path.startswith('/etc/devd/') %}
    - watch_in:
      - service: carpd-devd-restart
{%-   elif 'syslog.d/' in path and carpd.syslog.enabled %}
    - watch_in:
      - service: carpd-syslogd-reload
{%-   endif %}
{%- endfor %}
