"""The fleet benchmark workload for pyinfra: the same 20 steps per node as
ansible.yaml and edgeforge.yaml, every path under the node's own root
(bench_base/<node name>). Host data `node`, `site` and `bench_base` come from
the inventory fleet_bench.py writes. Run with the workload directory as the
working directory (templates/ and files/ are relative to it).
"""

from pyinfra import host
from pyinfra.operations import files, server

root = f"{host.data.bench_base}/{host.name}"
etc = f"{root}/etc/app"
lib = f"{root}/var/lib/app"
node = host.data.node
site = host.data.site

# 2 directories
files.directory(name="config directory", path=etc, mode="755")
files.directory(name="data directory", path=lib, mode="755")

# 8 templated config files
for conf in (
    "app.conf",
    "db.conf",
    "cache.conf",
    "proxy.conf",
    "logging.conf",
    "metrics.yaml",
    "network.conf",
    "agent.env",
):
    files.template(
        name=conf,
        src=f"templates/bench/{conf}.tmpl",
        dest=f"{etc}/{conf}",
        mode="644",
        node=node,
        site=site,
    )

# 2 uploads of 1 MB
files.put(name="upload blob-a", src="files/blob-a.bin", dest=f"{lib}/blob-a.bin", mode="644")
files.put(name="upload blob-b", src="files/blob-b.bin", dest=f"{lib}/blob-b.bin", mode="644")

# 4 guarded commands. pyinfra's server.shell has no creates/unless, so the
# guard runs in the same remote shell as the command (one round trip, as
# Ansible's `creates`); pyinfra therefore reports these as changed every run.
server.shell(
    name="seed limits.env",
    commands=[f"test -e {etc}/limits.env || printf '%s\\n' NOFILE_SOFT=1024 NOFILE_HARD=1024 > {etc}/limits.env"],
)
server.shell(
    name="seed environment",
    commands=[f"test -e {etc}/environment || printf '%s\\n' LANG=C.UTF-8 APP_MODE=dev > {etc}/environment"],
)
server.shell(
    name="register node",
    commands=[
        f"grep -qx 'registered {host.name}' {lib}/registry 2>/dev/null"
        f" || echo 'registered {host.name}' >> {lib}/registry"
    ],
)
server.shell(
    name="checksums of uploads",
    commands=[f"test -e {lib}/SHA256SUMS || (cd {lib} && sha256sum blob-a.bin blob-b.bin > SHA256SUMS)"],
)

# 4 line-in-file edits
files.line(name="app mode production", path=f"{etc}/environment", line="^APP_MODE=.*", replace="APP_MODE=production")
files.line(name="node name in environment", path=f"{etc}/environment", line="^NODE_NAME=.*", replace=f"NODE_NAME={host.name}")
files.line(name="soft nofile limit", path=f"{etc}/limits.env", line="^NOFILE_SOFT=.*", replace="NOFILE_SOFT=65536")
files.line(name="hard nofile limit", path=f"{etc}/limits.env", line="^NOFILE_HARD=.*", replace="NOFILE_HARD=65536")
