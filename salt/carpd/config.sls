#   -------------------------------------------------------------
#   carpd formula — carpd.yaml and the secretsmith file
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    salt/carpd/config.sls
#   -------------------------------------------------------------
# The secretsmith file holds the AppRole secret_id: mode 0400, root,
# show_changes off so the secret never reaches Salt's output or job
# cache, and its credentials read on the master through
# secretsmith:read_with (the site's credentials.read_secret by
# default), never from pillar. carpd.yaml holds no secret (passwords
# and OVH credentials come from Vault or root-only files) and is
# checked by "carpd check" before it replaces the running one.
{%- from 'carpd/map.jinja' import carpd with context %}
{%- set ss = carpd.secretsmith %}

include:
  - carpd.install
  - carpd.kmod
{%- for problem in carpd.problems %}

carpd-settings-{{ loop.index }}:
  test.fail_without_changes:
    - name: {{ problem | json }}
{%- endfor %}

{%- if carpd.manage.secretsmith %}

{{ ss.path }}:
  file.managed:
    - source: salt://carpd/files/carp-secretsmith.yaml.jinja
    - template: jinja
    - user: root
    - group: wheel
    - mode: '0400'
    - makedirs: True
    - show_changes: False
    - context:
        url: {{ ss.url | json(sort_keys=False) }}
        verify: {{ ss.verify | json(sort_keys=False) }}
        namespace: {{ ss.namespace | json(sort_keys=False) }}
        approle: {{ salt[ss.read_with](ss.approle_secret) | json(sort_keys=False) }}
{%- endif %}

{{ carpd.paths.config }}:
  file.managed:
    - source: salt://carpd/files/carpd.yaml.jinja
    - template: jinja
    - user: root
    - group: wheel
    - mode: '0644'
    - context:
        order: [node, carp, groups, daemon, vault, ovh, failover_ips, readiness, maintenance, metrics]
        config: {{ carpd.config | json(sort_keys=False) }}
{%- if carpd.service.check_config %}
    # Salt appends the new file's temporary path: carpd check -c <new file>.
    - check_cmd: {{ carpd.paths.binary }} check -c
{%- endif %}
    - require:
      - sls: carpd.install
      - sls: carpd.kmod
{%- if carpd.manage.secretsmith %}
      - file: {{ ss.path }}
{%- endif %}
