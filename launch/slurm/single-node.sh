#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (slurmctld + slurmd as the current user,
# no munge, no cgroups), for trying the sbatch scripts and for the Slurm test. Everything lives
# in DIR: slurm.conf, state, spool, logs and the daemons' PID files.
#   launch/slurm/single-node.sh start DIR    # prints: export SLURM_CONF=DIR/slurm.conf
#   launch/slurm/single-node.sh stop DIR     # stops the daemons by their PIDs
# Needs Debian's slurmctld, slurmd and slurm-client (launch/install-deps.sh --with-slurm).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi

stop() {
  local pid
  for d in slurmd slurmctld; do
    [[ -f "$dir/$d.pid" ]] || continue
    pid=$(cat "$dir/$d.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$d.pid"
  done
}

if [[ "$cmd" == "stop" ]]; then
  stop
  exit 0
fi
if [[ "$cmd" != "start" ]]; then
  echo "$0: unknown command '$cmd' (start | stop)" >&2
  exit 2
fi

for b in slurmctld slurmd sinfo; do
  if ! command -v "$b" >/dev/null; then
    echo "$0: '$b' is not installed (launch/install-deps.sh --with-slurm installs Slurm)" >&2
    exit 1
  fi
done

dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
host=$(hostname -s)
# The node offers more CPUs than it has (slurmd takes the configured count, config_overrides):
# an m6rec job is several processes, most of them waiting on the network, and the sbatch
# scripts ask for whole nodes' worth of tasks.
cpus=${M6REC_SLURM_CPUS:-16}
user=$(id -un)
# Ports from the directory's name hash, so two of these clusters on one machine do not collide.
base=$((20000 + $(printf '%s' "$dir" | cksum | cut -d' ' -f1) % 20000))
cat >"$dir/slurm.conf" <<EOF
ClusterName=m6rec-local
SlurmctldHost=$host
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/none
CredType=cred/none
MpiDefault=none
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
SchedulerType=sched/builtin
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF

export SLURM_CONF="$dir/slurm.conf"
stop  # leftovers of an earlier start in the same DIR
slurmctld -i >"$dir/log/slurmctld.out" 2>&1
slurmd >"$dir/log/slurmd.out" 2>&1
# Wait until the node takes jobs (bounded).
for _ in $(seq 100); do
  state=$(sinfo -h -n "$host" -o '%t' 2>/dev/null | head -1 || true)
  if [[ "$state" == idle* || "$state" == mix* ]]; then
    echo "export SLURM_CONF=$dir/slurm.conf"
    exit 0
  fi
  sleep 0.2
done
echo "$0: the node did not become idle in 20 s (state '${state:-?}'); logs in $dir/log" >&2
tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
stop
exit 1
