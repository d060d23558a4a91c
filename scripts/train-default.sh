#!/usr/bin/env bash
# Reproduce the bundled default model: build the corpus, train (resumable), train the genre/mood classifier,
# evaluate on the validation split, and copy the result into model/default/.
# Every step resumes: re-run the script after an interruption. Logs go to $RUN/*.log.
#   RUN=runs/default bash scripts/train-default.sh      (env: MINUTES=training budget, 0 = none; WORKERS=build workers)
# Training takes about 70 minutes on one CPU thread; with a budget it stops, saves, and the next run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/default}
DATA=${DATA:-data/corpus}
MINUTES=${MINUTES:-0}
WORKERS=${WORKERS:-2}
MS=.venv/bin/moodstream
mkdir -p "$RUN"

echo "[1/4] dataset → $DATA"
$MS dataset build --out "$DATA" --workers "$WORKERS" --seed 0 2>>"$RUN/dataset.log"

echo "[2/4] training → $RUN/model (budget: ${MINUTES} min, 0 = none)"
if [ -f "$RUN/model/train_state.pt" ]; then resume=--resume; else resume=; fi
$MS train --data "$DATA" --out "$RUN/model" --config training/configs/default.toml \
    --max-minutes "$MINUTES" --threads 1 $resume 2>>"$RUN/train.log"

echo "[3/4] classifier → $RUN/model/classifier"
$MS evaluate --train-classifier --data "$DATA" --out "$RUN/model/classifier" 2>>"$RUN/classifier.log"

echo "[4/4] evaluation → $RUN/eval"
$MS evaluate --model "$RUN/model" --data "$DATA" --out "$RUN/eval" 2>>"$RUN/evaluate.log"
echo "done: copy $RUN/model (model.safetensors, model.json, tokenizer.json, classifier/) into model/default/"
