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
# ARAS_CACHE (default ~/.cache/aras) must be on a filesystem every node shares (and the merging machine sees): the
# stages write their parts, checkpoints and synthetic sets there, and the merge reads them back.
# CPUs: each rank runs segmentation.num_workers (paper: 16) loader processes besides itself, so a node of 8 GPUs needs
# about 8 x 17 = 136 CPUs; ask for what your nodes have (--cpus-per-task) or lower it (--set segmentation.num_workers=N).
#SBATCH --job-name=aras
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=128
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=aras-%j.out
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: sbatch scripts/slurm.sh STAGE [its arguments]  (STAGE: gan, segmentation, captioning, metrics)" >&2; exit 2; }
stage="$1"; shift
case "$stage" in gan|segmentation|captioning|metrics) ;; *) echo "slurm.sh: unknown stage $stage (gan, segmentation, captioning, metrics)" >&2; exit 2;; esac
module="aras.$stage"; [ "$stage" = segmentation ] && module=aras.seg_matrix   # the module that defines each command line
cd "${SLURM_SUBMIT_DIR:-.}"
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")   # not `| head -1`: with pipefail, SIGPIPE would end the job
head_node="${nodes[0]}"
if [ -z "${SLURM_GPUS_ON_NODE:-}" ]; then              # one process per GPU; 1 on CPU nodes (gloo)
  echo "slurm.sh: SLURM_GPUS_ON_NODE is unset (no --gpus-per-node / --gres=gpu:N?): one process per node" >&2
fi
procs="${SLURM_GPUS_ON_NODE:-1}"
workers="${ARAS_LOADER_WORKERS:-16}"                  # segmentation.num_workers of the run (paper: 16)
if [ "${SLURM_CPUS_PER_TASK:-0}" -lt $(( procs * (workers + 1) )) ]; then
  echo "slurm.sh: ${SLURM_CPUS_PER_TASK:-?} CPUs per node for $procs ranks x ($workers loader workers + 1) = $(( procs * (workers + 1) )): loaders will compete (ask --cpus-per-task or lower segmentation.num_workers, and set ARAS_LOADER_WORKERS to match)" >&2
fi
port="${ARAS_RDZV_PORT:-29500}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( ${SLURM_CPUS_PER_TASK:-$procs} / procs > 0 ? ${SLURM_CPUS_PER_TASK:-$procs} / procs : 1 ))}"
echo "aras $stage: $SLURM_NNODES nodes x $procs processes, rendezvous at $head_node:$port (job $SLURM_JOB_ID)"
echo "aras $stage: ARAS_CACHE=${ARAS_CACHE:-$HOME/.cache/aras} must be on a filesystem shared by all nodes"
srun --kill-on-bad-exit=1 "${ARAS_VENV:-.venv}/bin/python" -m torch.distributed.run \
  --nnodes "$SLURM_NNODES" --nproc_per_node "$procs" \
  --rdzv_backend c10d --rdzv_endpoint "$head_node:$port" --rdzv_id "aras-$SLURM_JOB_ID" \
  -m "$module" "$@"
