#!/usr/bin/env bash
# A one-node SLURM on this machine (CI's, or a developer's as root), so the SLURM tests and
# the README's SLURM sweep run against a real scheduler. Debian's packages; no systemd or
# cgroups needed: processes are tracked through /proc and accounting is off (the launcher
# reads job states from squeue). Stop it with scripts/slurm_down.sh.
set -euo pipefail
STATE=${SLURM_STATE:-/var/lib/lineage-slurm}
if ! command -v slurmctld >/dev/null || ! command -v sbatch >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
mkdir -p "$STATE" /etc/slurm /run/munge /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
cores=$(nproc)
# below what is free now, so a job never asks for memory the machine cannot give
mem=$(awk '/MemAvailable/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=lineage-ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=${SLURM_TASK_PLUGIN:-task/affinity}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MinJobAge=300
KillWait=5
NodeName=localhost CPUs=$cores RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
start() {  # name, command...: in the background, its pid kept for slurm_down.sh
  local name=$1; shift
  nohup "$@" >"$STATE/$name.out" 2>&1 &
  echo $! >"$STATE/$name.daemon"
}
start munged setpriv --reuid=munge --regid=munge --init-groups munged -F
for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.2; done
start slurmctld slurmctld -D -i
start slurmd slurmd -D -N localhost
# ready once the node takes jobs
for _ in $(seq 150); do
  state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
  case $state in idle|mix|alloc) echo "SLURM up: partition cpu, $cores CPUs, ${mem} MB"; exit 0;; esac
  sleep 0.2
done
echo "error: SLURM did not come up (node state: ${state:-none}); see /var/log/slurm and $STATE/*.out" >&2
exit 1
