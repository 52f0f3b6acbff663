#!/usr/bin/env bash
# A one-node Slurm cluster on this machine: try `clusterlm launch --slurm --submit` on a laptop,
# and run the tests marked `slurm` (`make test-slurm`).
#
#   scripts/local-slurm.sh up      install Slurm and MUNGE if missing (apt-get, Debian/Ubuntu), write
#                                  a config, start munged, slurmctld and slurmd; then print the
#                                  `export SLURM_CONF=…` line the Slurm commands need
#   scripts/local-slurm.sh status  the daemons and `sinfo`; exit status 0 when up, 3 when not
#   scripts/local-slurm.sh down    cancel every job, stop the daemons (by their pid files), wait until
#                                  they have exited: nothing is left running
#   scripts/local-slurm.sh env     print the `export SLURM_CONF=…` line
#
# Every command is idempotent (`up` twice starts nothing new; `down` twice stops nothing new).
# Everything lives in $CLUSTERLM_SLURM_DIR (default /tmp/clusterlm-slurm): slurm.conf, the MUNGE
# key and socket, the controller's state, spool, logs and pid files. /etc/slurm and /etc/munge
# are not touched, and the daemons listen on ports 16817/16818 so a system Slurm can coexist.
# Needs root: slurmd starts jobs as the users who submit them.
#
# The cluster: this host is the controller and the only node, with all its CPUs and 90 % of its
# memory, in one partition `local` (CPU only). auth/munge, proctrack/linuxproc, select/cons_tres
# (cores and memory are the consumable resources), no accounting database (so `sacct` is off and
# `clusterlm jobs` reads finished jobs from the controller, which remembers them for 5 minutes).
# A requeued job waits cred_expire = 5 s before it may start again (Slurm's default is 120 s).
set -euo pipefail

DIR=${CLUSTERLM_SLURM_DIR:-/tmp/clusterlm-slurm}
CTLD_PORT=${CLUSTERLM_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${CLUSTERLM_SLURMD_PORT:-16818}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
export PATH=$PATH:/usr/sbin:/sbin
DAEMONS=(munged slurmctld slurmd)

die() { echo "local-slurm: error: $*" >&2; exit 1; }
abort() { echo "local-slurm: error: $*" >&2; stop_daemons; exit 1; }
say() { echo "local-slurm: $*"; }

# The pid of a daemon we started, if it is still that daemon (a stale pid file's pid may
# have been reused by an unrelated process, which must never be signalled).
pid_of() {
    local file=$DIR/$1.pid pid
    [ -s "$file" ] || return 1
    pid=$(cat "$file")
    [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$1" ] && echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

all_up() {
    local d
    for d in "${DAEMONS[@]}"; do running "$d" || return 1; done
}

install() {
    local missing=0 cmd
    for cmd in munged slurmctld slurmd sbatch srun squeue scontrol sinfo; do
        command -v "$cmd" >/dev/null || missing=1
    done
    [ "$missing" = 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root (sudo $0 up)"
    command -v apt-get >/dev/null || die "install slurmctld, slurmd, slurm-client and munge with your package manager"
    say "installing slurmctld slurmd slurm-client munge with apt-get (log: $DIR/apt.log)"
    export DEBIAN_FRONTEND=noninteractive
    local pkgs=(slurmctld slurmd slurm-client munge)
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$DIR/apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR/apt.log" 2>&1 \
             && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$DIR/apt.log" 2>&1; } \
        || die "apt-get could not install ${pkgs[*]}; see $DIR/apt.log"
}

write_config() {
    local node host mem_mb
    # `slurmd -C` prints this machine as a node line: NodeName=host CPUs=… Boards=… RealMemory=…
    node=$(slurmd -C | head -n 1)
    host=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$node")
    mem_mb=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$node")
    # Leave 10 % headroom: a node reporting less memory than configured is drained.
    node=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((mem_mb * 9 / 10))/" <<<"$node")
    cat >"$CONF.tmp" <<EOF
# Written by scripts/local-slurm.sh: a one-node test cluster on $host.
ClusterName=clusterlm-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket,cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

node_ready() { sinfo --noheader --format=%t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

up() {
    if all_up; then
        say "already up ($DIR)"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    install
    stop_daemons  # a half-started cluster from an earlier run: start clean
    if [ ! -s "$DIR/munge.key" ]; then
        (umask 077 && head -c 1024 /dev/urandom >"$DIR/munge.key")
    fi
    write_config
    # A daemon that fails to start: stop the ones already running, leaving nothing behind.
    munged --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" --pid-file="$DIR/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munged.seed" \
        || abort "munged did not start; see $DIR/log/munged.log"
    slurmctld -f "$CONF" || abort "slurmctld did not start; see $DIR/log/slurmctld.log"
    slurmd -f "$CONF" || abort "slurmd did not start; see $DIR/log/slurmd.log"
    if ! wait_for 30 "the node" node_ready; then
        tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
        abort "the node did not become idle within 30 s (logs above)"
    fi
    say "up: $(sinfo --noheader --format='partition %P, node %N, %c CPUs, %m MB')"
    echo "export SLURM_CONF=$CONF"
}

stop_daemon() {
    local name=$1 pid
    pid=$(pid_of "$name") || { rm -f "$DIR/$name.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 15 "$name to exit" bash -c "! kill -0 $pid 2>/dev/null"; then
        say "$name (pid $pid) ignored SIGTERM for 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 5 "$name to die" bash -c "! kill -0 $pid 2>/dev/null" || die "could not stop $name (pid $pid)"
    fi
    rm -f "$DIR/$name.pid"
    say "stopped $name (pid $pid)"
}

stop_daemons() {
    # slurmd first (it starts job steps), then the controller, then MUNGE that both talk through.
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
}

no_jobs() { [ -z "$(squeue --noheader --format=%i 2>/dev/null)" ]; }

down() {
    if running slurmctld && running munged; then
        local jobs
        jobs=$(squeue --noheader --format=%i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            say "cancelling job(s) $(echo $jobs)"
            # shellcheck disable=SC2086
            scancel $jobs || true
            # Their processes (slurmstepd and the job's own) must be gone before slurmd stops.
            wait_for 30 "jobs to end" no_jobs || say "jobs still listed after 30 s: $(echo $(squeue -h -o %i))"
        fi
    fi
    stop_daemons
    rm -f "$DIR/munge.socket" "$DIR/munge.socket.lock"
    say "down"
}

status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$d"); then
            printf '%-10s running (pid %s)\n' "$d" "$pid"
        else
            printf '%-10s stopped\n' "$d"
            rc=3
        fi
    done
    if [ "$rc" = 0 ]; then
        sinfo || rc=3
        squeue || true
    fi
    return "$rc"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
