#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for the workflow tests and CI.
#   local_slurm.sh start   install slurm-wlm + munge if missing, write /etc/slurm/slurm.conf, start
#                          munged, slurmctld and slurmd; wait until the node is idle
#   local_slurm.sh stop    stop every daemon this script started (by the pids it recorded)
# No systemd, no cgroups, no accounting storage. The config must sit at /etc/slurm/slurm.conf:
# the executor plugin's job step strips SLURM_* variables (SLURM_CONF included).
set -euo pipefail
STATE=${LOCAL_SLURM_STATE:-/tmp/local-slurm}
PIDS="$STATE/pids"

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  mkdir -p "$STATE"/{spool,state,log} /etc/slurm /etc/munge /var/log/munge /run/munge /var/lib/munge
  : > "$PIDS"
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=lesionlocator-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid 2>/dev/null || /usr/sbin/munged -f
    sleep 0.5
    echo "munged $(cat /run/munge/munged.pid)" >> "$PIDS"
  fi
  /usr/sbin/slurmctld -c
  /usr/sbin/slurmd -c
  for _ in $(seq 1 60); do
    [ -s "$STATE/slurmctld.pid" ] && [ -s "$STATE/slurmd.pid" ] && break
    sleep 0.5
  done
  echo "slurmctld $(cat "$STATE/slurmctld.pid")" >> "$PIDS"
  echo "slurmd $(cat "$STATE/slurmd.pid")" >> "$PIDS"
  for _ in $(seq 1 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      echo "local SLURM cluster up: node $host idle"
      return 0
    fi
    sleep 0.5
  done
  echo "local SLURM cluster did not become idle; see $STATE/log" >&2
  sinfo >&2 || true
  return 1
}

stop() {
  [ -f "$PIDS" ] || return 0
  while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  done < "$PIDS"
  rm -f "$PIDS"
  echo "local SLURM cluster stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
