#!/usr/bin/env bash
# The whole peer table of benchmarks/README.md (issue 27), from nothing: every router one process (JOBS at a
# time, niced, one thread each), merged with --combine (bootstrap intervals and the two-model table drawn
# over all of them together), then the README's table rewritten from the JSON.
#
#   PY=peers-venv/bin/python EMB=/tmp/llmrouter_minilm.npy benchmarks/peers_fair.sh [JOBS]
#
# ROUTERS overrides the list (keys as peers.py --routers takes them); EXTRA adds options to every run. A router
# whose part exists is skipped and one being run is claimed (a folder), so a second launcher may share PARTS;
# delete PARTS to start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-peers-venv/bin/python}
EMB=${EMB:-/tmp/llmrouter_minilm.npy}
JOBS=${1:-4}
PARTS=${PARTS:-/tmp/tryage-peers-parts}
OUT=${OUT:-benchmarks/results/peers.json}
COMMON="--embeddings $EMB --tune --inner-folds 2 --svm-without-probability --llmrouter-mlp-epochs 20 --routellm-mf-epochs 10 ${EXTRA:-}"
# Cheapest and most asked-for first: on a busy machine the tail may not finish (rerun the script to go on).
DEFAULT="tryage knn irt llmrouter_knn llmrouter_knn@shuffled llmrouter_knn@all-winners routellm_sw_ranking
 llmrouter_elo llmrouter_elo@shuffled llmrouter_elo@all-winners llmrouter_svm llmrouter_svm@shuffled
 llmrouter_graph llmrouter_graph_trainscaler llmrouter_hybrid_pair tryage_shipped
 llmrouter_mf llmrouter_mf@shuffled llmrouter_mf@all-winners llmrouter_graph@shuffled
 llmrouter_graph_trainscaler@shuffled llmrouter_hybrid routellm_mf llmrouter_graph@all-winners
 llmrouter_graph_trainscaler@all-winners llmrouter_mlp llmrouter_mlp@shuffled llmrouter_mlp@all-winners"
ROUTERS=${ROUTERS:-$DEFAULT}
mkdir -p "$PARTS"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
printf '%s\n' $ROUTERS | xargs -P "$JOBS" -I{} sh -c \
  "[ -s '$PARTS/{}.json' ] || ! mkdir '$PARTS/{}.claimed' 2>/dev/null || nice -n 10 $PY benchmarks/peers.py \
   $COMMON --routers '{}' --out '$PARTS/{}.json' > '$PARTS/{}.out' 2> '$PARTS/{}.log' \
   || { rmdir '$PARTS/{}.claimed'; echo 'failed: {} (see $PARTS/{}.log)'; }"
# Too costly to tune here (SVC on the all-winner copies: one fit ~8 min, the grid ~20 min a fold): C fixed, said so.
SVM_FIXED=${SVM_FIXED-llmrouter_svm@all-winners}
for r in $SVM_FIXED; do
  [ -s "$PARTS/$r.json" ] || nice -n 10 $PY benchmarks/peers.py $COMMON --routers "$r" --fixed '{"C": 1.0}' \
    --fixed-why "not tuned: CPU (SVC on the all-winners copies, about 20 min per fold with the grid); C=1 is what \
inner CV chose on every fold of the shuffled order" --out "$PARTS/$r.json" > "$PARTS/$r.out" 2> "$PARTS/$r.log" \
    || echo "failed: $r (see $PARTS/$r.log)"
done
# tryage first: the reference every difference is taken against
parts=$(ls "$PARTS"/tryage.json; ls "$PARTS"/*.json | grep -v '/tryage.json$')
$PY benchmarks/peers.py --combine $parts --out "$OUT" > /dev/null
$PY benchmarks/peers.py --out "$OUT" --markdown benchmarks/README.md
