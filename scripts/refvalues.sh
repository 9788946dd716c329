#!/usr/bin/env bash
# refvalues.sh IMAGE_DIR OUT_DIR: writes the published reference values of
# the dev image (and their exports) and the production manifest's measurement.
set -euo pipefail
img="$1"; out="$2"
mkdir -p "$out"
name=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["name"])' "$img/reference-values.json")
cp "$img/reference-values.json" "$out/$name.json"
for f in checkconfig rvps flashbots; do
  bin/builder export --format "$f" -o "$out/$name.$f.json" "$img/reference-values.json"
done
# The production image: what can be precomputed here without its weights.
bin/builder measure --json manifests/confidential-ai.hcl > "$out/tdforge-confidential-ai.measure.json.tmp"
mv "$out/tdforge-confidential-ai.measure.json.tmp" "$out/tdforge-confidential-ai.measure.json"
echo "reference values written to $out/"
