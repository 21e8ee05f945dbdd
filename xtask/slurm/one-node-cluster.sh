#!/bin/bash
# A Slurm cluster of this one machine, for the tests and for trying Kiln's Slurm commands:
#   xtask/slurm/one-node-cluster.sh start STATE_DIR   # then: export SLURM_CONF=STATE_DIR/slurm.conf
#   xtask/slurm/one-node-cluster.sh stop STATE_DIR
# Needs root and Debian's slurm-wlm and munge packages; no systemd. The node is this machine
# as `slurmd -C` sees it; jobs run as root; MPI jobs start through PMIx (`srun --mpi=pmix`).
set -euo pipefail
action=${1:?usage: $0 start|stop STATE_DIR}
state=$(realpath -m "${2:?usage: $0 start|stop STATE_DIR}")

stop() {
  for daemon in slurmd slurmctld; do
    if [ -f "$state/$daemon.pid" ]; then
      kill "$(cat "$state/$daemon.pid")" 2>/dev/null || true
      rm -f "$state/$daemon.pid"
    fi
  done
}

case $action in
stop)
  stop
  exit 0
  ;;
start) ;;
*)
  echo "usage: $0 start|stop STATE_DIR" >&2
  exit 2
  ;;
esac

[ "$(id -u)" = 0 ] || { echo "$0: the daemons need root" >&2; exit 1; }
for tool in munged slurmctld slurmd; do
  command -v "$tool" > /dev/null || {
    echo "$0: $tool not found (Debian: apt-get install slurm-wlm munge)" >&2
    exit 1
  }
done
mkdir -p "$state/ctld" "$state/slurmd"
# One munge daemon serves every cluster on the machine.
if ! pgrep -x munged > /dev/null; then
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- munged
fi
node=$(slurmd -C | head -1)
host=$(hostname -s)
cat > "$state/slurm.conf" <<CONF
ClusterName=kiln
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=$((6817 + RANDOM % 1000))
SlurmdPort=$((7817 + RANDOM % 1000))
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/jobcomp.txt
MpiDefault=pmix
ReturnToService=2
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
$node
PartitionName=kiln Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$state/slurm.conf
stop
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  if sinfo -h -o %t 2> /dev/null | grep -qx idle; then
    echo "Slurm is up: export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "$0: the node did not become idle within 20 s; see $state/slurmctld.log and $state/slurmd.log" >&2
sinfo >&2 || true
exit 1
