#!/usr/bin/env bash
# Status command for the cluster-generic fallback (docs/cluster.md): prints running, success
# or failed for one SLURM job id, as snakemake-executor-plugin-cluster-generic expects.
#   --cluster-generic-status-cmd profiles/slurm/cg-status.sh
# squeue first; once slurmctld has purged the job (MinJobAge), sacct where accounting works,
# else the jobcomp/filetxt log if the cluster keeps one.
jid="$1"
st=$(squeue -h -j "$jid" -t all -o %T 2>/dev/null | head -n1)
if [ -z "$st" ] && command -v sacct >/dev/null; then
  st=$(sacct -n -X -P -j "$jid" -o State 2>/dev/null | head -n1 | cut -d' ' -f1)
fi
if [ -z "$st" ]; then
  loc=$(scontrol show config 2>/dev/null | awk -F'= ' '/^JobCompLoc/{print $2}')
  if [ -n "$loc" ] && [ -r "$loc" ]; then
    st=$(grep "^JobId=$jid " "$loc" | tail -n1 | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  fi
fi
case "$st" in
  COMPLETED) echo success ;;
  # unknown (not yet visible) counts as running: snakemake asks again
  PENDING|RUNNING|CONFIGURING|COMPLETING|SUSPENDED|REQUEUED|RESIZING|SIGNALING|STAGE_OUT|REQUEUE_HOLD|REQUEUE_FED|"") echo running ;;
  *) echo failed ;;
esac
