#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before bench/gpu_check.sh: fills the two carried, git-ignored folders.
#   .data/covid-ct  the images, packed under the 64 MiB carry limit (bench/pack_data.py, ~42 MiB)
#   .whl/           wheels the GPU machine lacks (Python 3.12, x86-64): pydantic and friends, openpyxl, imagehash
# Then: run(command="OUT=$OUT bash bench/gpu_check.sh", carry=[".whl", ".data/covid-ct"], timeout_s=420)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
: "${CTCURATE_DATA:=$(cd .. && pwd)/shared/covid-ct}"
rm -rf .data/covid-ct .whl
"$PY" bench/pack_data.py "$CTCURATE_DATA" .data/covid-ct
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection 'typing-extensions>=4.16' \
    openpyxl et-xmlfile imagehash pywavelets
du -sh .data/covid-ct .whl
