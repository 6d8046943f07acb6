#!/usr/bin/env bash
# Bring up (or tear down) a real one-node SLURM cluster on localhost, for the
# tests that submit jobs through sbatch / submitit.
#
#   bash scripts/slurm_local.sh [start]   # install if needed, configure, start, wait until usable
#   bash scripts/slurm_local.sh stop      # stop slurmd, slurmctld, munged
#   bash scripts/slurm_local.sh status    # exit 0 iff `srun hostname` works
#
# Meant for CI (.ci/run) and dev boxes: Debian 12 (slurm-wlm 22.05), run as
# root, no systemd as PID 1, no usable cgroups. Network is only used by apt.
set -euo pipefail

# Everything below (apt, /etc/munge, /etc/slurm, daemons running as root) needs root.
if [[ $(id -u) -ne 0 ]]; then
    echo "slurm_local.sh: must run as root (installs packages, writes /etc/slurm, starts daemons)" >&2
    exit 2
fi

CMD=${1:-start}
HOST=$(hostname -s)
PARTITION=debug
CONF_DIR=/etc/slurm            # Debian's slurm-wlm 22.05 reads /etc/slurm/slurm.conf
SPOOL_CTLD=/var/spool/slurmctld
SPOOL_D=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
READY_TIMEOUT=${SLURM_LOCAL_TIMEOUT:-90}

log() { echo "slurm_local: $*" >&2; }
# Seconds since $1 (an $EPOCHREALTIME value), one decimal.
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# True when a job step really runs: the only check that proves munge, slurmctld,
# slurmd and the node state all work together. `timeout` keeps a hung
# controller from blocking us (-k: srun treats the first SIGTERM as "cancel the
# step and wait", so it can hang on a dead slurmd; SIGKILL it 1 s later);
# --immediate makes srun fail instead of queueing. A killed srun leaves its
# allocation RUNNING (time limit is INFINITE), holding a CPU, so cancel it.
# The subshell keeps bash's "Killed" job notice off the terminal.
cluster_answers() {
    command -v srun >/dev/null 2>&1 || return 1
    if (timeout -k 1 "${1:-10}" srun --immediate=5 -J slurm_local_probe -N1 -n1 hostname; exit $?) >/dev/null 2>&1; then
        return 0
    fi
    (timeout -k 1 5 scancel -n slurm_local_probe; exit $?) >/dev/null 2>&1 || true
    return 1
}

ready_line() {
    local cpus
    cpus=$(sinfo -h -p "$PARTITION" -o %C 2>/dev/null | awk -F/ '{print $4}' || true)
    echo "slurm ready in $(elapsed "$1") s (partition $PARTITION, ${cpus:-?} CPUs)"
}

stop_cluster() {
    # pkill -x matches the exact process name, so nothing else is touched.
    local d
    for d in slurmd slurmctld munged; do
        if pkill -x "$d" 2>/dev/null; then
            for _ in $(seq 1 20); do pgrep -x "$d" >/dev/null || break; sleep 0.5; done
            pkill -9 -x "$d" 2>/dev/null || true
            log "stopped $d"
        fi
    done
}

install_packages() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null \
        && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v pgrep >/dev/null; then
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    # slurm-wlm pulls in slurmctld, slurmd and the client tools; munge is the
    # authentication daemon both sides need. --no-install-recommends keeps out
    # e.g. a mail server and the docs.
    local pkgs=(slurm-wlm munge) t0=$EPOCHREALTIME
    # pgrep/pkill (used below) are not in minimal Debian images.
    command -v pgrep >/dev/null || pkgs+=(procps)
    log "installing ${pkgs[*]} ..."
    if ! apt-get install -y --no-install-recommends "${pkgs[@]}"; then
        # Package lists missing or stale (fresh image): refresh once and retry.
        apt-get update
        apt-get install -y --no-install-recommends "${pkgs[@]}"
    fi
    log "installed ${pkgs[*]} in $(elapsed "$t0") s"
}

start_munge() {
    local key=/etc/munge/munge.key
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    if [[ ! -s $key ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" --force
        elif command -v create-munge-key >/dev/null; then
            create-munge-key -f
        else
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        fi
    fi
    # munged refuses keys/dirs that are group- or world-accessible, or owned by
    # another user than the one it runs as.
    chown munge:munge "$key" /etc/munge /var/lib/munge /var/log/munge /run/munge
    chmod 0400 "$key"
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge   # clients (any user) must reach the socket
    if ! pgrep -x munged >/dev/null; then
        # Debian's munged runs as the unprivileged `munge` user (the init
        # script does the same); it daemonizes by itself.
        rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
        runuser -u munge -- /usr/sbin/munged
    fi
    local _
    for _ in $(seq 1 10); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 1
    done
    log "munge does not work (munge -n | unmunge fails); see /var/log/munge/munged.log"
    tail -n 20 /var/log/munge/munged.log >&2 || true
    return 1
}

write_config() {
    local cpus mem_mb
    cpus=$(nproc)
    # slurmd drains a node whose configured RealMemory exceeds what it measures
    # ("Low RealMemory"), so declare 90% of MemTotal, at most MemTotal - 256 MB.
    mem_mb=$(awk '/^MemTotal:/ { t = int($2 / 1024); m = int(t * 0.9);
                 if (t - m < 256) m = t - 256; if (m < 1) m = 1; print m }' /proc/meminfo)

    mkdir -p "$CONF_DIR" "$SPOOL_CTLD" "$SPOOL_D" "$LOG_DIR" "$RUN_DIR"
    cat >"$CONF_DIR/slurm.conf.new" <<EOF
# Written by scripts/slurm_local.sh: one-node test cluster on localhost.
ClusterName=mst-local
# Pin every address to loopback: one-node cluster, and it must not depend on
# the CI machine's hostname resolving (or resolving to a reachable address).
SlurmctldHost=$HOST(127.0.0.1)
# Daemons run as root: no slurm user or file ownership to set up, and root
# slurmd can run jobs as any submitting user.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups here (containers, gVisor, CI VMs): track processes through /proc
# and do no task binding/confinement, so no cgroup plugin is ever loaded.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: nothing is recorded, so sacct does not work on this cluster.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# Allocate single CPUs, not whole nodes, so several 1-CPU jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# A node that was DOWN (e.g. slurmd restarted) comes back as soon as it
# registers with a valid configuration, instead of waiting for scontrol.
ReturnToService=2
# Short timeouts: tests should see failures fast, and the node is local.
SlurmctldTimeout=30
SlurmdTimeout=30
# Cancel srun/salloc allocations whose client died (e.g. a test killed by a
# timeout) after 60 s instead of letting them hold a CPU forever.
InactiveLimit=60
MinJobAge=300
KillWait=5
Waittime=0
SchedulerType=sched/backfill
# Default batch_sched_delay=3 lets a batch job submitted right after another
# one wait ~3 s to start; with 0 it is ~1 s (measured), which tests feel.
SchedulerParameters=batch_sched_delay=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"
    chmod 0644 "$CONF_DIR/slurm.conf"
}

start_slurm() {
    # Both daemonize by themselves (no -D). Only start what is not running, so
    # a half-up cluster is completed rather than restarted.
    if ! pgrep -x slurmctld >/dev/null; then
        /usr/sbin/slurmctld
    fi
    if ! pgrep -x slurmd >/dev/null; then
        /usr/sbin/slurmd
    fi
}

dump_logs() {
    log "cluster not ready after ${READY_TIMEOUT} s"
    sinfo -N -l >&2 2>&1 || true
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        echo "----- last lines of $f -----" >&2
        tail -n 30 "$f" >&2 2>/dev/null || echo "(missing)" >&2
    done
}

start() {
    local t0=$SECONDS t0r=$EPOCHREALTIME
    # Fast path: already up (e.g. second call from the same CI job). Only ask
    # srun when the daemons exist: with no slurmctld, srun keeps retrying the
    # connection until the timeout, which would add 5 s to every cold start.
    if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null \
        && pgrep -x munged >/dev/null && cluster_answers 5; then
        ready_line "$t0r"
        return 0
    fi
    install_packages
    start_munge
    write_config
    start_slurm
    local state=""
    while ((SECONDS - t0 < READY_TIMEOUT)); do
        state=$(sinfo -h -p "$PARTITION" -o %T 2>/dev/null | head -n1 || true)
        case $state in
            idle*|mixed*|allocated*|completing*)
                if cluster_answers 10; then
                    ready_line "$t0r"
                    return 0
                fi ;;
            down*|drain*)
                # e.g. left DOWN by an earlier run: clear it (ReturnToService=2
                # covers the normal case; this covers "Not responding" leftovers).
                scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    dump_logs
    return 1
}

case $CMD in
    start) start ;;
    stop) stop_cluster ;;
    status)
        if cluster_answers 10; then echo "slurm up"; else echo "slurm down"; exit 1; fi ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
