# -------------------------------------------------------------
# carpd formula: the devd rule, and devd restarted when it changes
# -------------------------------------------------------------
# The daemon reads devd's socket itself; the rule is a safety net that
# nudges it (or runs a one-shot reconcile when no daemon runs). devd
# only reads its rules at start, hence the restart.
{%- from 'carpd/map.jinja' import carpd with context %}

{{ carpd.paths.devd_rule }}:
{%- if carpd.devd.rule %}
  file.managed:
    - source: salt://carpd/files/devd/carpd.conf
    - user: root
    - group: wheel
    - mode: '0644'
    - makedirs: True
{%- else %}
  file.absent: []
{%- endif %}

devd:
  service.running:
    - watch:
      - file: {{ carpd.paths.devd_rule }}
