#!/usr/bin/env bash
# One short GPU session (issue 9), run on a lent machine from the repository root:
#   1. train, concurrently on the one GPU, a Tatoeba-only model (A, the baseline) and a
#      multi-domain model (B) with bf16 autocast and large token batches;
#   2. evaluate both on the multi-domain test split (BLEU/chrF per domain);
#   3. time decoding of B on the GPU (python -m bench.gpu);
#   4. serve B on cuda with the real app and record /models and one translation.
# Inputs: .gpu/data.tgz (data/splits from `python -m model.data --sources all`, the manifest and
# two tokenizers), optionally .whl/ (wheels the GPU image lacks). Outputs go to $OUT, results
# first and weights in <16 MiB chunks, so a run cut short still returns what it finished.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
TRAIN_MIN=${TRAIN_MIN:-4.5}
# B may train longer than the baseline A: its dev BLEU was still rising when 3.5 minutes ran out.
TRAIN_MIN_A=${TRAIN_MIN_A:-$TRAIN_MIN}
TRAIN_MIN_B=${TRAIN_MIN_B:-$TRAIN_MIN}
EVAL_LIMIT=${EVAL_LIMIT:-0}
BATCH_TOKENS=${BATCH_TOKENS:-24000}
DEVICE=${DEVICE:-cuda}
W=/tmp/gpu-work
rm -rf "$W"
mkdir -p "$OUT" "$W/res"
started=$(date +%s)
stamp() { echo "[$(( $(date +%s) - started ))s] $*"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$W/res/nvidia-smi.csv" 2>&1 || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$W/res/torch.txt"
tar -xzf "${DATA_TGZ:-.gpu/data.tgz}" -C "$W"
D="$W/data"

common=(--data "$D/splits" --d-model 384 --heads 6 --d-ff 1536 --encoder-layers 6 --decoder-layers 3
        --dropout 0.15 --batch-tokens "$BATCH_TOKENS" --lr 1e-3 --warmup 600
        --dev-limit 200 --checkpoint-minutes 2 --device "$DEVICE")
stamp "training A ($TRAIN_MIN_A min) and B ($TRAIN_MIN_B min), concurrently"
python3 -m model.train "${common[@]}" --max-minutes "$TRAIN_MIN_A" --only-sources tatoeba --tokenizer "$D/tokenizer-tatoeba.json" \
  --run-dir "$W/runA" --export "$W/wA/es-en-tatoeba" --eval-every 6 ${EXTRA_A:-} > "$W/res/trainA.log" 2>&1 &
python3 -m model.train "${common[@]}" --max-minutes "$TRAIN_MIN_B" --tokenizer "$D/tokenizer-all.json" \
  --domain-weights conversation=1,software=0.7,bible=0.5,prose=2 \
  --run-dir "$W/runB" --export "$W/wB/es-en-multidomain" --eval-every 3 ${EXTRA_B:-} > "$W/res/trainB.log" 2>&1 &
wait
stamp "training done"
tail -c 1500 "$W/res/trainA.log"; tail -c 1500 "$W/res/trainB.log"
cp "$W"/runA/history.json "$W/res/historyA.json" 2>/dev/null
cp "$W"/runB/history.json "$W/res/historyB.json" 2>/dev/null
cp -r "$W/wB/es-en-multidomain" "$W/res/modelB" 2>/dev/null && rm -f "$W/res/modelB/model.safetensors"
cp -r "$W/wA/es-en-tatoeba" "$W/res/modelA" 2>/dev/null && rm -f "$W/res/modelA/model.safetensors"
split -b 15M "$W/wB/es-en-multidomain/model.safetensors" "$OUT/modelB.safetensors.part-"
split -b 15M "$W/wA/es-en-tatoeba/model.safetensors" "$OUT/modelA.safetensors.part-"
pack() { tar -czf "$OUT/results.tgz" -C "$W" res; }
pack

stamp "evaluating A and B on the test split"
python3 -m model.evaluate --weights "$W/wA/es-en-tatoeba" --data "$D/splits" --strategies beam4 --batch-size 128 \
  --limit "$EVAL_LIMIT" --json "$W/res/evalA.json" > "$W/res/evalA.log" 2>&1 &
python3 -m model.evaluate --weights "$W/wB/es-en-multidomain" --data "$D/splits" --strategies beam4 --batch-size 128 \
  --limit "$EVAL_LIMIT" --json "$W/res/evalB.json" > "$W/res/evalB.log" 2>&1 &
wait
stamp "evaluation done"; tail -n 5 "$W/res/evalA.log" "$W/res/evalB.log"
pack

stamp "timing decoding on the GPU"
python3 -m bench.gpu --weights "$W/wB/es-en-multidomain" --data "$D/splits" --device "$DEVICE" \
  --bleu-limit 500 --batch1-sentences 32 --results "$W/res" > "$W/res/bench.log" 2>&1
tail -n 20 "$W/res/bench.log"
pack

stamp "serving on $DEVICE"
WEIGHTS_DIR="$W/wB" DEVICE="$DEVICE" HOST=127.0.0.1 PORT=8765 python3 -m app > "$W/res/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 90); do
  curl -sf http://127.0.0.1:8765/ready >/dev/null 2>&1 && break
  sleep 1
done
curl -s http://127.0.0.1:8765/models > "$W/res/serve_models.json"
curl -s -X POST http://127.0.0.1:8765/translate -H 'content-type: application/json' \
  -d '{"text": "El gato come pescado.", "source": "es", "target": "en", "output": {"steps": true, "top_k": 3, "attention": "mean"}}' \
  > "$W/res/serve_translate.json"
kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
head -c 600 "$W/res/serve_models.json"; echo
pack
stamp "all done"
