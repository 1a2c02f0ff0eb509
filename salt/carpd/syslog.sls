#   -------------------------------------------------------------
#   carpd formula — carpd's log, and carpd out of /var/log/messages
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    salt/carpd/syslog.sls
#   -------------------------------------------------------------
# syslog:mode own writes carpd's lines to a file of their own; join
# writes them to the site's CARP log through one program block naming
# every program of syslog:programs (the site's fragment is then this
# formula's). syslogd keeps one program selector at a time and resets
# it at the start of every file, so the /var/log/messages line of
# /etc/syslog.conf gets one "!-carp-ovh,carpd" block: a site's
# existing "!-carp-ovh" line right above it is extended, never wrapped
# a second time (a later "!-carpd" would replace it, not add to it).
# syslogd does not create log files: the file is created here.
# newsyslog reads its configuration at every run; syslogd needs a
# reload.
{%- from 'carpd/map.jinja' import carpd with context %}
{%- set sl = carpd.syslog %}
{%- set programs = carpd.syslog_programs %}
{%- set joined = programs | join(',') %}
{%- set names = programs | map('regex_escape') | join('|') %}
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
        programs: {{ programs | json }}
        file: {{ sl.file }}
{%-   if sl.mode == 'own' %}

{{ sl.file }}:
  file.managed:
    - replace: False
    - user: {{ sl.rotate.owner.split(':')[0] }}
    - group: {{ sl.rotate.owner.split(':')[1] }}
    - mode: '0{{ sl.rotate.mode }}'

{{ sl.newsyslog_conf }}:
  file.managed:
    - source: salt://carpd/files/newsyslog.conf.jinja
    - template: jinja
    - user: root
    - group: wheel
    - mode: '0644'
    - makedirs: True
    - context: {{ dict(sl.rotate, file=sl.file) | json(sort_keys=False) }}
{%-   endif %}

{%-   for destination in sl.exclude_from %}

carpd-syslog-exclude-{{ destination }}:
  file.replace:
    - name: {{ sl.syslog_conf }}
    # An active line (not a comment, not a block) writing to the file,
    # with the program-exclusion line above it if that line names only
    # these programs (the site's "!-carp-ovh"), unless the line above
    # it, or that exclusion line, is already "!-{{ joined }}".
    - pattern: '^(?<!!-{{ joined | regex_escape }}\n)(?!!-{{ joined | regex_escape }}\n)(?:!-(?:{{ names }})(?:,(?:{{ names }}))*\n)?([^#!\n][^\n]*[ \t]{{ destination | regex_escape }})[ \t]*$'
    - repl: '!-{{ joined }}\n\1\n!*'
    - flags: [MULTILINE]
    - append_if_not_found: False
    - backup: False
{%-   endfor %}

carpd-syslogd-reload:
  service.running:
    - name: syslogd
    - reload: True
    - watch:
      - file: {{ sl.conf }}
{%-   if sl.mode == 'own' %}
      - file: {{ sl.file }}
{%-   endif %}
{%-   for destination in sl.exclude_from %}
      - file: carpd-syslog-exclude-{{ destination }}
{%-   endfor %}
{%- endif %}
