#   -------------------------------------------------------------
#   carpd formula — carpd's devd rule, only once no other hook runs
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    salt/carpd/devd.sls
#   -------------------------------------------------------------
# devd runs only the first matching notify rule (devd.cc,
# find_and_execute): carpd's CARP rule beside a site's CARP rule would
# silently stop one of them. The daemon reads devd's socket itself and
# needs no rule, so the rule is installed only from migration step ip,
# in the same run that removes the old hook (carpd.legacy), and absent
# before. devd only reads its rules at start, hence the restart.
{%- from 'carpd/map.jinja' import carpd with context %}

{{ carpd.paths.devd_rule }}:
{%- if carpd.devd_rule_active %}
  file.managed:
    - source: salt://carpd/files/devd/carpd.conf
    - user: root
    - group: wheel
    - mode: '0644'
    - makedirs: True
{%- else %}
  file.absent: []
{%- endif %}

carpd-devd-restart:
  service.running:
    - name: devd
    - watch:
      - file: {{ carpd.paths.devd_rule }}
