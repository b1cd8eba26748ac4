#!/usr/bin/env bash
# A throw-away one-node Slurm cluster on this machine, to run a batch script on it:
#
#   sudo deploy/slurm/local-cluster.sh SBATCH-OPTIONS... SCRIPT [SCRIPT-ARGUMENTS...]
#
# e.g. `sudo deploy/slurm/local-cluster.sh --nodes=1 --ntasks-per-node=3 --overcommit
# --output=job.out deploy/slurm/neumeta.sbatch --rounds 30`. Starts munged, slurmctld and
# slurmd (as root, in the foreground of this script) with a configuration of their own in a
# temporary directory, waits until the node is idle, submits the job, waits for it, and exits
# with the job's status. Whatever happens, the job is cancelled and the three daemons are
# stopped and their directory removed when the script ends; on a failure the tail of each
# daemon's log is printed first. Installs nothing: needs the Debian packages slurm-wlm and munge
# (scripts/install-deps.sh). The job runs as root, with this script's environment.
#
# One node named localhost (address 127.0.0.1) with this machine's CPUs; no cgroups
# (proctrack/linuxproc, task/none), no accounting. Ports: random free ones in 20000-59999
# (SLURM_LOCAL_CTLD_PORT, SLURM_LOCAL_D_PORT to choose). Exit status: the job's, or 97 when
# Slurm could not be started (missing programs, not root, daemons that do not come up).
set -euo pipefail

log() { printf '%s local-cluster: %s\n' "$(date '+%T')" "$*" >&2; }
unavailable() { log "Slurm cannot start here: $*"; exit 97; }

(( $# >= 1 )) || { echo "usage: $0 SBATCH-OPTIONS... SCRIPT [SCRIPT-ARGUMENTS...]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || unavailable "must run as root (the daemons start as root)"
for program in munged slurmctld slurmd sbatch sinfo squeue scancel scontrol; do
  command -v "$program" >/dev/null || unavailable "$program not found (install slurm-wlm and munge)"
done

# A free TCP port on 127.0.0.1: random, refused when tried.
free_port() {
  local port
  for _ in $(seq 50); do
    port=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  unavailable "no free port found"
}
ctld_port="${SLURM_LOCAL_CTLD_PORT:-$(free_port)}"
d_port="${SLURM_LOCAL_D_PORT:-$(free_port)}"
[ "$ctld_port" != "$d_port" ] || d_port=$(( ctld_port + 1 ))

work=$(mktemp -d "${TMPDIR:-/tmp}/neumeta-slurm.XXXXXX")
chmod 0755 "$work"   # slurmstepd reads the spool directory after dropping to the job's user
munge_pid="" ctld_pid="" d_pid="" job=""

# shellcheck disable=SC2317  # called by the trap
stop() {
  local pid
  for pid in "$@"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for pid in "$@"; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || return 0
    sleep 0.1
  done
  for pid in "$@"; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true; done
}
# shellcheck disable=SC2317
teardown() {
  local status=$?
  if [ -n "$job" ] && [ -n "$ctld_pid" ]; then
    # The job's processes belong to slurmstepd, not to slurmd: cancel it and wait until the
    # controller has seen it end, so nothing of it outlives the daemons.
    scancel --full "$job" 2>/dev/null || true
    for _ in $(seq 100); do
      [ -z "$(squeue -h -j "$job" -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  if (( status != 0 )); then
    for name in munged slurmctld slurmd; do
      [ -s "$work/$name.log" ] && { log "last lines of $name.log:"; tail -n 15 "$work/$name.log" >&2; }
    done
  fi
  stop "$d_pid" "$ctld_pid"
  stop "$munge_pid"
  rm -rf "$work"
  exit "$status"
}
trap teardown EXIT
trap 'exit 143' TERM INT

# MUNGE: a fresh key and a socket of its own, so a system munged (if any) is not involved.
# The socket's directory is readable by all (the job's user talks to it); the key's is not.
mkdir -m 0755 "$work/munge"
mkdir -m 0700 "$work/munge-key"
head -c 1024 /dev/urandom > "$work/munge-key/munge.key"
chmod 0600 "$work/munge-key/munge.key"
munged --foreground --force --socket="$work/munge/socket" --key-file="$work/munge-key/munge.key" \
  --pid-file="$work/munge-key/munged.pid" --log-file="$work/munged.log" --seed-file="$work/munge-key/seed" \
  >/dev/null 2>&1 &
munge_pid=$!
for _ in $(seq 100); do [ -S "$work/munge/socket" ] && break; sleep 0.1; done
[ -S "$work/munge/socket" ] || unavailable "munged did not start"

cpus=$(nproc)
mkdir -p "$work/ctld" "$work/spool"
cat > "$work/slurm.conf" <<CONF
ClusterName=neumeta-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/socket
StateSaveLocation=$work/ctld
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$work/slurm.conf"

slurmctld -D -i -f "$SLURM_CONF" >>"$work/slurmctld.log" 2>&1 &
ctld_pid=$!
slurmd -D -N localhost -f "$SLURM_CONF" >>"$work/slurmd.log" 2>&1 &
d_pid=$!

state=""
for _ in $(seq 150); do
  kill -0 "$ctld_pid" 2>/dev/null || unavailable "slurmctld exited"
  kill -0 "$d_pid" 2>/dev/null || unavailable "slurmd exited"
  state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
[ "$state" = idle ] || unavailable "the node did not become idle within 30 s (state: ${state:-none})"
log "slurmctld on 127.0.0.1:$ctld_port, slurmd on :$d_port, node localhost idle ($cpus CPUs)"

# From here on the exit status is the job's.
job=$(sbatch --parsable "$@")
job="${job%%;*}"
log "submitted job $job"
# Poll the job until it reaches a final state (a requeued job passes through PENDING again).
while :; do
  result=$(scontrol -o show job "$job" 2>/dev/null || true)
  state=$(printf '%s' "$result" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  case "$state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) break ;; esac
  for daemon in "slurmctld:$ctld_pid" "slurmd:$d_pid"; do
    kill -0 "${daemon#*:}" 2>/dev/null || { log "${daemon%%:*} exited while job $job was ${state:-unknown}"; exit 1; }
  done
  sleep 0.5
done
code=$(printf '%s' "$result" | sed -n 's/.* ExitCode=\([0-9]*\):\([0-9]*\).*/\1 \2/p')
read -r exit_status exit_signal <<<"${code:-1 0}"
log "job $job ended: $state, exit code ${code/ /:}"
job=""
exit $(( exit_signal != 0 ? 128 + exit_signal : exit_status ))
