#!/usr/bin/env bash
# Install (if needed) and start a one-node Slurm on this machine, for the Slurm tests.
#
# Debian/Ubuntu, as root; no systemd needed (see the README's Batch section). Idempotent: a
# second call finds the daemons running and returns at once. Prints, as its last line,
#   SLURM_CONF=<path>
# which the clients (sbatch, squeue, scancel) need in their environment.
# Exit status: 0 ready; 3 cannot be installed here (not root, no apt-get): the caller skips.
#
# Stop it with: tests/setup/slurm.sh stop
set -euo pipefail

DIR="${OTREG_SLURM_DIR:-/var/tmp/otreg-slurm}"
CONF="$DIR/slurm.conf"
NODE="$(uname -n)"; NODE="${NODE%%.*}"   # hostname -s, without the hostname package

log() { echo "slurm.sh: $*" >&2; }

alive() {  # pid file -> running (not a zombie)
    local pid state
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ -r "/proc/$pid/stat" ]] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat")"
    [[ "$state" != "Z" ]]
}

stop() {
    # (only with a live controller: against a dead one the clients wait for their timeout)
    if [[ -f "$CONF" ]] && command -v squeue >/dev/null && alive "$DIR/slurmctld.pid"; then
        SLURM_CONF="$CONF" scancel --user=root 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -z "$(SLURM_CONF="$CONF" squeue -h 2>/dev/null)" ]] && break
            sleep 0.2
        done
    fi
    for name in slurmd slurmctld munged; do
        if alive "$DIR/$name.pid"; then kill -TERM "$(cat "$DIR/$name.pid")" || true; fi
    done
    for _ in $(seq 100); do  # until they are gone (zombies count as gone), at most 10 s
        alive "$DIR/slurmd.pid" || alive "$DIR/slurmctld.pid" || alive "$DIR/munged.pid" || break
        sleep 0.1
    done
}

if [[ "${1:-}" == "stop" ]]; then stop; exit 0; fi

if [[ -f "$CONF" ]] && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" \
    && [[ "$(SLURM_CONF="$CONF" sinfo -h -n "$NODE" -o %T 2>/dev/null)" == idle* || \
          "$(SLURM_CONF="$CONF" sinfo -h -n "$NODE" -o %T 2>/dev/null)" == mix* || \
          "$(SLURM_CONF="$CONF" sinfo -h -n "$NODE" -o %T 2>/dev/null)" == alloc* ]]; then
    echo "SLURM_CONF=$CONF"
    exit 0
fi

if [[ "$(id -u)" != 0 ]]; then log "not root: cannot install or start Slurm"; exit 3; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    if ! command -v apt-get >/dev/null; then log "no apt-get: cannot install Slurm"; exit 3; fi
    log "installing munge and slurm (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >&2 || { log "apt-get update failed"; exit 3; }
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
        munge slurmctld slurmd slurm-client >&2 || { log "apt-get install failed"; exit 3; }
fi

stop
mkdir -p "$DIR"/{state,spool,log}
chmod 755 "$DIR"

# munge: a key, and munged as the munge user (it refuses root), pid folder owned by munge
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --force >&2; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge "$DIR/munge"
chown munge:munge /run/munge "$DIR/munge"
runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" >&2
for _ in $(seq 50); do [[ -s "$DIR/munge/munged.pid" ]] && break; sleep 0.1; done
ln -sf "$DIR/munge/munged.pid" "$DIR/munged.pid"
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 3; }

CPUS="$(nproc)"
MEM=$(( $(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 512 ))  # no procps needed
cat > "$CONF" <<CONF
# one-node test cluster written by tests/setup/slurm.sh
ClusterName=otregtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=5
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

rm -rf "$DIR/state"/*   # job ids from 1 again
export SLURM_CONF="$CONF"
slurmctld -c -f "$CONF" >&2
slurmd -N "$NODE" -f "$CONF" >&2
for _ in $(seq 300); do   # 60 s; 0.1-2 s measured
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)"
    [[ "$state" == idle* ]] && { echo "SLURM_CONF=$CONF"; exit 0; }
    sleep 0.2
done
log "the node did not become idle (state: ${state:-none}); see $DIR/log"
exit 3
