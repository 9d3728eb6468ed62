#!/usr/bin/env bash
# One stage of aras on a SLURM cluster: one torchrun agent per node, one process per GPU, joined by a c10d rendezvous
# on the first node. Every stage resumes where it stopped (part files, checkpoints), so a requeued job continues.
#
#   sbatch --nodes 4 --gpus-per-node 8 scripts/slurm.sh captioning --profile paper --device cuda --data-root data/ARAS400k
#   sbatch --nodes 2 --gpus-per-node 8 scripts/slurm.sh gan --kind uncond --profile paper --device cuda --data-root data/ARAS400k
#   sbatch --nodes 1 --gpus-per-node 8 scripts/slurm.sh segmentation train --mix real --profile paper --device cuda --data-root data/ARAS400k
#
# Stages: gan, segmentation, captioning, metrics (python -m aras.<stage>; segmentation: aras.seg_matrix); the arguments
# after the stage are its own.
# Afterwards, `aras reproduce --profile paper ...` on one machine merges the parts into the chapters' tables and figures.
# ARAS_CACHE (default ~/.cache/aras) must be on a filesystem every node shares (and the merging machine
# sees): the stages write their parts, checkpoints and synthetic sets there, and the merge reads them back.
# Every rank gets it as one absolute path.
# CPUs: the node's CPUs (--cpus-per-task; passed to srun too, as since SLURM 22.05 srun no longer inherits
# it and the agent would run on one CPU) are shared by its ranks: OMP_NUM_THREADS = CPUs / ranks, less the
# segmentation loaders (ARAS_THREADS_PER_RANK sets it outright). Each segmentation rank runs
# segmentation.num_workers (paper: 16; read from `--set segmentation.num_workers=N`, else ARAS_LOADER_WORKERS)
# loader processes besides itself, so a node of 8 GPUs needs about 8 x 17 = 136 CPUs: ask for what your
# nodes have (--cpus-per-task) or lower it.
# The rendezvous port is 20000 + (job id mod 20000): two jobs sharing a node do not collide (ARAS_RDZV_PORT).
#SBATCH --job-name=aras
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=128
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=aras-%j.out
set -euo pipefail
die() {
  echo "slurm.sh: $*" >&2
  exit 2
}
stages="gan, segmentation, captioning, metrics"
[ $# -ge 1 ] || die "usage: sbatch scripts/slurm.sh STAGE [its arguments]  (STAGE: $stages)"
stage="$1"; shift
case "$stage" in gan|segmentation|captioning|metrics) ;; *) die "unknown stage $stage ($stages)";; esac
module="aras.$stage"; [ "$stage" = segmentation ] && module=aras.seg_matrix   # the stage's command line
for v in SLURM_JOB_ID SLURM_NNODES SLURM_JOB_NODELIST; do
  [ -n "${!v:-}" ] || die "$v is unset: run this script with sbatch (or inside salloc)"
done
cd "${SLURM_SUBMIT_DIR:-.}"
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")   # not `| head -1`: with pipefail, SIGPIPE would end the job
head_node="${nodes[0]:-}"
[ -n "$head_node" ] || die "scontrol lists no hosts for $SLURM_JOB_NODELIST"
gpus="${SLURM_GPUS_ON_NODE:-}"
if [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then                # one process per GPU
  procs="$gpus"
else                                                  # 1 on CPU nodes (gloo)
  echo "slurm.sh: SLURM_GPUS_ON_NODE=${gpus:-(unset)} (no --gpus-per-node / --gres=gpu:N?):" \
    "one process per node" >&2
  procs=1
fi
cpus="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-}}"   # the CPUs of the node's task: agent and ranks
workers=0
if [ "$stage" = segmentation ]; then
  workers="${ARAS_LOADER_WORKERS:-16}"                # segmentation.num_workers of the run (paper: 16)
  for a in "$@"; do
    case "$a" in segmentation.num_workers=*) workers="${a#*=}";; esac
  done
  need=$(( procs * (workers + 1) ))
  if [ -n "$cpus" ] && [ "$cpus" -lt "$need" ]; then
    echo "slurm.sh: $cpus CPUs per node for $procs ranks x ($workers loader workers + 1) = $need:" \
      "loaders will compete (ask --cpus-per-task or lower segmentation.num_workers)" >&2
  fi
fi
threads=$(( ${cpus:-$procs} / procs - workers ))
export OMP_NUM_THREADS="${ARAS_THREADS_PER_RANK:-$(( threads > 0 ? threads : 1 ))}"
ARAS_CACHE="$(realpath -m "${ARAS_CACHE:-$HOME/.cache/aras}")"   # one absolute path on every node
export ARAS_CACHE
port="${ARAS_RDZV_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}"
step=(--kill-on-bad-exit=1 "--nodes=$SLURM_NNODES" --ntasks-per-node=1)
if [ -n "$cpus" ]; then
  step+=("--cpus-per-task=$cpus")
fi
echo "aras $stage: $SLURM_NNODES nodes x $procs processes, rendezvous at $head_node:$port" \
  "(job $SLURM_JOB_ID); $OMP_NUM_THREADS threads per process"
echo "aras $stage: ARAS_CACHE=$ARAS_CACHE must be on a filesystem shared by all nodes"
srun "${step[@]}" "${ARAS_VENV:-.venv}/bin/python" -m torch.distributed.run \
  --nnodes "$SLURM_NNODES" --nproc_per_node "$procs" \
  --rdzv_backend c10d --rdzv_endpoint "$head_node:$port" --rdzv_id "aras-$SLURM_JOB_ID" \
  -m "$module" "$@"
