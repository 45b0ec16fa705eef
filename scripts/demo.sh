#!/usr/bin/env bash
# Sets up .venv, then runs the main job end to end on the bundled samples/:
# train a MoCo encoder (3-minute budget on CPU), index the folder, search it, find duplicates and score them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
BUDGET=${BUDGET:-3}
retrieval train samples --out runs/samples --time-budget "$BUDGET" --batch-size 32
retrieval index samples --model runs/samples --index indexes/samples
retrieval info --index indexes/samples
retrieval search samples/photos/mate-backgrounds-Aqua.jpg --index indexes/samples -k 5
retrieval dedup --index indexes/samples --report runs/samples/duplicates.html
echo "duplicate report: runs/samples/duplicates.html"
# how well it did on the samples' planted duplicates, beside a random-init encoder and perceptual hashing
retrieval eval dedup --index indexes/samples --truth samples/duplicates.json --compare
echo
echo "open the web app on this index (Ctrl-C to stop):"
echo "  .venv/bin/retrieval app --index indexes/samples"
