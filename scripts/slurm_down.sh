#!/usr/bin/env bash
# Stops the daemons scripts/slurm_up.sh started, by the pids it kept.
STATE=${SLURM_STATE:-/var/lib/lineage-slurm}
for name in slurmd slurmctld munged; do
  f=$STATE/$name.daemon
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$f"
done
