#   -------------------------------------------------------------
#   carpd formula — the CARP kernel module, now and at boot
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    salt/carpd/kmod.sls
#   -------------------------------------------------------------
# rc.d/carpd loads it too (required_modules), but "carpd check" runs
# before the service starts, and CARP groups from rc.conf need it at
# boot before carpd is up. A site whose own states write the loader.conf
# file sets manage:loader_conf false: one owner per path.
{%- from 'carpd/map.jinja' import carpd with context %}
{%- if carpd.manage.loader_conf %}

{{ carpd.paths.loader_conf }}:
  file.managed:
    - source: salt://carpd/files/loader.conf
    - user: root
    - group: wheel
    - mode: '0644'
    - makedirs: True
{%- endif %}

# CARP held off at boot (net.inet.carp.allow=0) until carpd has restored
# its demotion ledger and applied carpd.yaml: a node in maintenance never
# wins an election across a reboot (docs/boot-order.md). Removed wherever
# carpd would not lift it (watch step, --no-apply, carp.allow_at_start
# false), or CARP would stay off after the next boot. Takes effect at the
# next boot only: a running MASTER is not touched.
{{ carpd.paths.boot_gate }}:
{%- if carpd.boot_gate %}
  file.managed:
    - source: salt://carpd/files/loader-boot-gate.conf
    - user: root
    - group: wheel
    - mode: '0644'
    - makedirs: True
{%- else %}
  file.absent: []
{%- endif %}

carpd-kmod-load:
  cmd.run:
    - name: kldload -n carp
    - unless: kldstat -q -m carp
