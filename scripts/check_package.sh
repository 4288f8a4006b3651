#!/usr/bin/env bash
# Checks topt_qgis.zip as the QGIS plugin store and a user would meet it:
#   1. its layout: one top folder topt_qgis/ with metadata.txt and LICENSE; no tests, caches,
#      weights or binaries; under 25 MB;
#   2. it loads: unzipped into a fresh QGIS profile, `qgis_process.bin plugins enable topt_qgis`
#      succeeds and `qgis_process.bin list` shows the topt provider's algorithms;
#   3. Bandit and detect-secrets on the unzipped plugin report nothing.
# The tools live in .venv-tools, pinned below, installed once (reinstalled when a pin changes).
# Usage: scripts/check_package.sh [ZIP]   (default: topt_qgis.zip; `make package` builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
zip=$(realpath "${1:-topt_qgis.zip}")
TOOLS=.venv-tools
PROVIDER=topt  # the plugin's Processing provider id: algorithms are listed as topt:<name>

[ -f "$zip" ] || { echo "check-package: $zip not found; run make package" >&2; exit 1; }
command -v qgis_process.bin >/dev/null \
  || { echo "check-package: qgis_process.bin not found; run make setup-qgis (Debian: apt install qgis)" >&2; exit 1; }

# ---------------------------------------------------------------- tools, pinned
pins="bandit==1.9.4
detect-secrets==1.5.0
PyYAML==6.0.3
stevedore==5.10.0
rich==15.0.0
markdown-it-py==4.3.0
mdurl==0.1.2
Pygments==2.21.0
requests==2.34.2
certifi==2026.10.18
charset-normalizer==3.5.2
idna==3.20
urllib3==2.8.0"
stamp="$TOOLS/.installed-$(md5sum <<<"$pins" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "== installing Bandit and detect-secrets into $TOOLS"
  [ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
  req=$(mktemp); echo "$pins" >"$req"
  "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$req"
  rm -f "$req" "$TOOLS"/.installed-* && touch "$stamp"
fi

# ---------------------------------------------------------------- 1. layout
echo "== layout of $zip"
python3 - "$zip" <<'PY'
import sys
import zipfile

MAX_BYTES = 25 * 1024 * 1024
IMAGES = (".png", ".jpg", ".jpeg", ".gif", ".ico", ".webp")
path = sys.argv[1]
problems = []
with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    tops = {n.split("/")[0] for n in names}
    if tops != {"topt_qgis"}:
        problems.append(f"top-level entries must be the one folder topt_qgis/, found {sorted(tops)}")
    for required in ("topt_qgis/metadata.txt", "topt_qgis/LICENSE", "topt_qgis/__init__.py",
                     "topt_qgis/engine/__main__.py", "topt_qgis/engine/requirements.txt",
                     "topt_qgis/engine/requirements-models.txt"):
        if required not in names:
            problems.append(f"{required} is missing")
    for info in zf.infolist():
        name = info.filename
        parts = name.split("/")
        if "__pycache__" in parts or name.endswith((".pyc", ".pyo")):
            problems.append(f"cache file {name}")
        if "tests" in parts or parts[-1].startswith("test_"):
            problems.append(f"test file {name}")
        if not name.endswith("/") and not name.lower().endswith(IMAGES):
            if b"\0" in zf.read(name):
                problems.append(f"binary file {name}")
    if "topt_qgis/LICENSE" in names and b"GNU GENERAL PUBLIC LICENSE" not in zf.read("topt_qgis/LICENSE"):
        problems.append("LICENSE is not the GPL text")
size = __import__("os").path.getsize(path)
if size >= MAX_BYTES:
    problems.append(f"the zip is {size / 1e6:.1f} MB; the plugin store takes < 25 MB")
for problem in problems:
    print(f"check-package: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{len(names)} entries, {size / 1024:.0f} KiB, one top folder topt_qgis/")
PY

# ---------------------------------------------------------------- 2. loads in a fresh QGIS profile
profile=$(mktemp -d -t topt-qgis-profile.XXXXXX)
trap 'rm -rf "$profile"' EXIT
plugins="$profile/profiles/default/python/plugins"
mkdir -p "$plugins"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$zip" "$plugins"
export QGIS_CUSTOM_CONFIG_PATH="$profile" QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$profile/runtime}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

echo "== QGIS: enable topt_qgis in a fresh profile ($profile)"
log="$profile/qgis.log"
if ! qgis_process.bin plugins enable topt_qgis >"$log" 2>&1; then
  cat "$log" >&2; echo "check-package: QGIS could not enable the plugin" >&2; exit 1
fi
if grep -qiE "Traceback|Error|couldn't load plugin" "$log"; then
  cat "$log" >&2; echo "check-package: QGIS reported an error while loading the plugin" >&2; exit 1
fi
qgis_process.bin list >"$log" 2>&1 || { cat "$log" >&2; echo "check-package: qgis_process list failed" >&2; exit 1; }
algorithms=$(grep -oE "^\s*$PROVIDER:[A-Za-z0-9_]+" "$log" | sed -E 's/^\s+//' | tr '\n' ' ' || true)
if [ -z "$algorithms" ]; then
  cat "$log" >&2
  echo "check-package: no '$PROVIDER:' algorithm in qgis_process list; the provider did not load" >&2
  exit 1
fi
echo "algorithms: $algorithms"

# ---------------------------------------------------------------- 3. Bandit and detect-secrets
echo "== Bandit"
(cd "$plugins" && "$OLDPWD/$TOOLS/bin/bandit" -r topt_qgis -q -f custom \
  --msg-template '{relpath}:{line} {test_id} {severity}/{confidence} {msg}') \
  || { echo "check-package: Bandit reported the findings above" >&2; exit 1; }
echo "no findings"

echo "== detect-secrets"
(cd "$plugins" && "$OLDPWD/$TOOLS/bin/detect-secrets" scan --all-files topt_qgis) >"$profile/secrets.json"
python3 - "$profile/secrets.json" <<'PY'
import json
import sys

results = json.load(open(sys.argv[1]))["results"]
for path, findings in sorted(results.items()):
    for finding in findings:
        print(f"check-package: possible secret ({finding['type']}) in {path}:{finding['line_number']}",
              file=sys.stderr)
if results:
    sys.exit(1)
print("no findings")
PY
echo "check-package: OK"
