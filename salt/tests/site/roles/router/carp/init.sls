#   -------------------------------------------------------------
#   Stand-in (tests only): the site's roles/router/carp
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   State IDs and paths from shared/reference/deployment.md, each
#   behind pillar stand_in:removed (the parts the migration guide
#   has the operator delete from the role by the step under test).
#   -------------------------------------------------------------
{%- set removed = salt['pillar.get']('stand_in:removed', []) %}

{%- if 'netif' not in removed %}
/etc/rc.conf.d/netif/carp:
  file.managed:
    - source: salt://roles/router/carp/files/carp.rc
    - template: jinja
    - context:
        carp_entries: {{ salt['node.get_carp_entries']() | json }}
    - mode: '0644'
{%- endif %}

{%- if 'loader' not in removed %}
/boot/loader.conf.d/carp.conf:
  file.managed:
    - source: salt://roles/router/carp/files/carp.conf
    - mode: '0644'
{%- endif %}

{%- if 'script' not in removed %}
carp_switch_pip:
  pkg.installed:
    - name: py311-pip

carp_switch_dependencies:
  cmd.run:
    - name: python3 -m pip install ovh secretsmith
    - creates: /usr/local/lib/python3.11/site-packages/secretsmith

/usr/local/libexec/carp/carp-ovh-failover:
  file.managed:
    - source: salt://roles/router/carp/files/carp-ovh-failover.py
    - mode: '0755'
    - makedirs: True
{%- endif %}

{%- if 'secretsmith' not in removed %}
/usr/local/etc/secrets/carp-secretsmith.yaml:
  file.managed:
    - source: salt://roles/router/carp/files/secrets.conf
    - mode: 400
    - makedirs: True
    - show_changes: False
    - template: jinja
    - context:
        vault:
          approle: {{ salt["credentials.read_secret"]("network/router/vault") | json }}
          addr: https://172.27.27.7:8200
{%- endif %}

{%- if 'devd' not in removed %}
/usr/local/etc/devd/carp.conf:
  file.managed:
    - source: salt://roles/router/carp/files/carp-devd.conf
    - mode: '0644'
{%- endif %}

{%- if 'syslog' not in removed %}
/usr/local/etc/syslog.d/carp.conf:
  file.managed:
    - source: salt://roles/router/carp/files/syslog.conf
    - makedirs: True
{%- endif %}

{%- if 'syslog_exclusion' not in removed %}
/etc/syslog.conf:
  file.replace:
    - pattern: '^(\*\.notice;[^\n]*/var/log/messages)$'
    - repl: '!-carp-ovh\n\1'
    - flags: [MULTILINE]
    - unless: grep -q '^!-carp-ovh' /etc/syslog.conf
{%- endif %}

{%- if 'newsyslog' not in removed %}
/etc/newsyslog.conf.d/carp.conf:
  file.managed:
    - source: salt://roles/router/carp/files/newsyslog.conf
{%- endif %}
