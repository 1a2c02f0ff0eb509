# -------------------------------------------------------------
# carpd formula: remove what carpd replaces
# -------------------------------------------------------------
# Files listed in carpd:legacy:absent (nothing by default): the old CARP
# rc.conf fragment, the failover script's devd rule, its syslog and
# newsyslog entries... Apply only in the order the README's migration
# section gives. A removed devd rule restarts devd, a removed syslog
# fragment reloads syslogd.
{%- from 'carpd/map.jinja' import carpd with context %}
{%- if carpd.legacy.absent %}

include:
  - carpd.devd
  - carpd.syslog
{%- endif %}

{%- for path in carpd.legacy.absent %}

{{ path }}:
  file.absent:
    - name: {{ path }}
{%-   if path.startswith('/usr/local/etc/devd/') or path.startswith('/etc/devd/') %}
    - watch_in:
      - service: devd
{%-   elif 'syslog.d/' in path and carpd.syslog.enabled %}
    - watch_in:
      - service: syslogd
{%-   endif %}
{%- endfor %}
