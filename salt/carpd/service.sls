#   -------------------------------------------------------------
#   carpd formula — the carpd service
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    salt/carpd/service.sls
#   -------------------------------------------------------------
# Enabled through its rc.conf.d file. A new carpd.yaml or secretsmith
# file is a reload (SIGHUP after "carpd check": the daemon keeps its
# state and a bad file never replaces a good one); a new binary or new
# flags (such as --no-apply leaving at migration step kernel) need a
# restart.
{%- from 'carpd/map.jinja' import carpd with context %}

include:
  - carpd.install
  - carpd.config

{{ carpd.paths.rc_conf }}:
  file.managed:
    - source: salt://carpd/files/rc.conf.jinja
    - template: jinja
    - user: root
    - group: wheel
    - mode: '0644'
    - makedirs: True
    - context:
        config: {{ carpd.paths.config }}
        flags: {{ carpd.run_flags | json(sort_keys=False) }}

carpd-service:
  service.running:
    - name: carpd
    - reload: True
    - require:
      - file: {{ carpd.paths.rc_conf }}
      - sls: carpd.install
    - watch:
      - file: {{ carpd.paths.config }}
{%- if carpd.manage.secretsmith %}
      - file: {{ carpd.secretsmith.path }}
{%- endif %}

carpd-service-restart:
  cmd.run:
    - name: service carpd restart
    - require:
      - service: carpd-service
    - onchanges:
      - file: {{ carpd.paths.rc_conf }}
{%- if carpd.install.method == 'pkg' %}
      - pkg: carpd-package
{%- else %}
      - file: {{ carpd.paths.binary }}
{%- endif %}
