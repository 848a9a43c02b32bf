#!/usr/bin/env bash
# Reproduce the figures of EVALUATION.md (run from the repository root, with shared/ beside it).
# Needs the [eval] extra (bm25s, PyStemmer, matplotlib). About 3 minutes on 2 CPU cores. CALIBRATE=1 also re-chooses the model's two thresholds.
# Every run records its summary in the shipped model's card (--write-model: the "evaluation" section of
# indexer/assets/default_model/model.json) and writes its reports into docs/eval: run it with the
# editable install (pip install -e) so that the files written are the checkout's. OUT=DIR writes the
# reports elsewhere, RECORD=0 leaves model.json alone (CALIBRATE=1 still rewrites its thresholds).
set -euo pipefail
D=${NERINDEX_DATA:?set NERINDEX_DATA to the folder of the labelled sets (../shared/data beside the checkout)}
OUT=${OUT:-docs/eval}
case "${RECORD:-1}" in 0|false|no|off) WRITE="" ;; *) WRITE=--write-model ;; esac
# mentions per type in the shipped model's training files, for Familiarity
TRAIN=(--train-data "$D/multiconer2_en/en-train90.conll" --train-data "$D/wnut17/train.conll"
       --train-data "$D/wikigold/wikigold.conll"
       --train-data "$D/btc/a.conll" --train-data "$D/btc/b.conll" --train-data "$D/btc/e.conll"
       --train-data "$D/btc/f.conll" --train-data "$D/btc/g.conll" --train-data "$D/btc/h.conll")
EVAL="nice -n 10 nerindex eval"

# 1. calibration on the model's validation split: seen types, then its unseen types for the second threshold; writes model.json
if [ "${CALIBRATE:-0}" = 1 ]; then
  $EVAL "$D/multiconer2_en/en-train10.conll" "$D/wnut17/dev.conll" --name "calibration: MultiCoNER en-train10 + WNUT-17 dev" \
    --calibrate --write-model "${TRAIN[@]}" --out "$OUT" --stem calibration
fi
# 2. zero-shot: CrossNER (never used in training) and MultiCoNER dev (medical types held out);
#    --write-model records a summary of each under "evaluation" in model.json
$EVAL "$D/crossner/politics/dev.txt" "${TRAIN[@]}" $WRITE --out "$OUT" --stem crossner-politics-dev
$EVAL "$D/crossner/literature/dev.txt" "${TRAIN[@]}" $WRITE --out "$OUT" --stem crossner-literature-dev
$EVAL "$D/multiconer2_en/en-dev.conll" "${TRAIN[@]}" $WRITE --out "$OUT" --stem multiconer-dev
# 3. social media (WNUT-17 dev was the model's validation data)
$EVAL "$D/wnut17/dev.conll" "${TRAIN[@]}" $WRITE --out "$OUT" --stem wnut17-dev
# 4. sets the model was trained on: a check that every format runs, not a quality figure
$EVAL "$D/wikigold/wikigold.conll" "${TRAIN[@]}" --out "$OUT" --stem wikigold-trained-on
$EVAL "$D/btc/e.conll" "${TRAIN[@]}" --out "$OUT" --stem btc-e-trained-on
# 5. the BEIR-style benchmarks of the zero-shot sets, for scoring other systems (one folder per file:
#    a BEIR folder judges every type on every passage, and the two label different types)
for S in politics literature; do
  $EVAL "$D/crossner/$S/dev.txt" --export-benchmark "${BEIR_OUT:-/tmp/nerindex-beir}-crossner-$S-dev"
done

# 6. the pooled tables of EVALUATION.md (every type/set pair of the four evaluation sets)
python docs/eval/pool.py $OUT/crossner-politics-dev.json $OUT/crossner-literature-dev.json $OUT/multiconer-dev.json $OUT/wnut17-dev.json
