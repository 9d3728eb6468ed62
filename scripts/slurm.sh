#!/usr/bin/env bash
# One stage of aras on a SLURM cluster: one torchrun agent per node, one process per GPU, joined by a c10d rendezvous
# on the first node. Every stage resumes where it stopped (part files, checkpoints), so a requeued job continues.
#
#   sbatch --nodes 4 --gpus-per-node 8 scripts/slurm.sh captioning --profile paper --device cuda --data-root data/ARAS400k
#   sbatch --nodes 2 --gpus-per-node 8 scripts/slurm.sh gan --kind uncond --profile paper --device cuda --data-root data/ARAS400k --out runs/gan-uncond
#   sbatch --nodes 1 --gpus-per-node 8 scripts/slurm.sh segmentation train --mix real --profile paper --device cuda --data-root data/ARAS400k
#
# Stages: gan, segmentation, captioning, metrics (python -m aras.<stage>); the arguments after the stage are its own.
# Afterwards, `aras reproduce --profile paper ...` on one machine merges the parts into the chapters' tables and figures.
#SBATCH --job-name=aras
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=aras-%j.out
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: sbatch scripts/slurm.sh STAGE [its arguments]  (STAGE: gan, segmentation, captioning, metrics)" >&2; exit 2; }
stage="$1"; shift
case "$stage" in gan|segmentation|captioning|metrics) ;; *) echo "slurm.sh: unknown stage $stage (gan, segmentation, captioning, metrics)" >&2; exit 2;; esac
cd "${SLURM_SUBMIT_DIR:-.}"
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")   # not `| head -1`: with pipefail, SIGPIPE would end the job
head_node="${nodes[0]}"
procs="${SLURM_GPUS_ON_NODE:-1}"                      # one process per GPU; 1 on CPU nodes (gloo)
port="${ARAS_RDZV_PORT:-29500}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( ${SLURM_CPUS_PER_TASK:-$procs} / procs > 0 ? ${SLURM_CPUS_PER_TASK:-$procs} / procs : 1 ))}"
echo "aras $stage: $SLURM_NNODES nodes x $procs processes, rendezvous at $head_node:$port (job $SLURM_JOB_ID)"
srun --kill-on-bad-exit=1 "${ARAS_VENV:-.venv}/bin/python" -m torch.distributed.run \
  --nnodes "$SLURM_NNODES" --nproc_per_node "$procs" \
  --rdzv_backend c10d --rdzv_endpoint "$head_node:$port" --rdzv_id "aras-$SLURM_JOB_ID" \
  -m "aras.$stage" "$@"
