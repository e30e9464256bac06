#!/usr/bin/env bash
# Slurm job array: N tasks analyze one recording on a shared folder, task i computing shard i/N.
# Every shard writes OUT/<name>/shard=<i>/, so the folder reads as one table when all are
# done; a task that is rerun skips the work items it already finished.
#
#   sbatch --array=0-15 examples/cluster/slurm-analyze.sh /shared/run.walk /shared/analysis
#
#SBATCH --job-name=sgdwalk-analyze
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
set -euo pipefail
RECORDING=${1:?recording}
OUT=${2:?output folder}
N=${SLURM_ARRAY_TASK_COUNT:?run as a job array}
I=${SLURM_ARRAY_TASK_ID:?run as a job array}
# Put sgdwalk-analyze on PATH (or set SGDWALK_ANALYZE) and the dataset in DATA_DIR.
exec "${SGDWALK_ANALYZE:-sgdwalk-analyze}" analyze "$RECORDING" -o "$OUT" \
  --data-dir "${DATA_DIR:-data/fashion-mnist}" --shard "$I/$N" --threads "${SLURM_CPUS_PER_TASK:-4}" \
  --quiet ${SGDWALK_ANALYZE_ARGS:-}
