# -------------------------------------------------------------
# carpd formula: carpd's own log file, out of /var/log/messages
# -------------------------------------------------------------
# syslogd(8) resets program blocks at the start of every file, so a
# block in syslog.d cannot keep lines out of /var/log/messages, which
# /etc/syslog.conf writes before its includes: the messages line itself
# is wrapped in "!-carpd" ... "!*". syslogd does not create log files:
# the file is created here. newsyslog reads its configuration at every
# run; syslogd needs a reload.
{%- from 'carpd/map.jinja' import carpd with context %}
{%- set sl = carpd.syslog %}
{%- if sl.enabled %}

{{ sl.conf }}:
  file.managed:
    - source: salt://carpd/files/syslog.conf.jinja
    - template: jinja
    - user: root
    - group: wheel
    - mode: '0644'
    - makedirs: True
    - context:
        file: {{ sl.file }}

{{ sl.file }}:
  file.managed:
    - replace: False
    - user: {{ sl.rotate.owner.split(':')[0] }}
    - group: {{ sl.rotate.owner.split(':')[1] }}
    - mode: '0{{ sl.rotate.mode }}'

{%-   for destination in sl.exclude_from %}

{{ sl.syslog_conf }} without carpd in {{ destination }}:
  file.replace:
    - name: {{ sl.syslog_conf }}
    # An active line (not a comment, not a block) writing to the file,
    # unless the line before it is already "!-carpd".
    - pattern: '^(?<!!-carpd\n)([^#!\n][^\n]*[ \t]{{ destination | regex_escape }})[ \t]*$'
    - repl: '!-carpd\n\1\n!*'
    - flags: [MULTILINE]
    - append_if_not_found: False
    - backup: False
{%-   endfor %}

{{ sl.newsyslog_conf }}:
  file.managed:
    - source: salt://carpd/files/newsyslog.conf.jinja
    - template: jinja
    - user: root
    - group: wheel
    - mode: '0644'
    - makedirs: True
    - context: {{ dict(sl.rotate, file=sl.file) | json(sort_keys=False) }}

syslogd:
  service.running:
    - reload: True
    - watch:
      - file: {{ sl.conf }}
      - file: {{ sl.file }}
{%-   for destination in sl.exclude_from %}
      - file: {{ sl.syslog_conf }} without carpd in {{ destination }}
{%-   endfor %}
{%- endif %}
