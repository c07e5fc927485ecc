#!/bin/sh
# Build the gateway's wheelhouse on the Ansible controller: the gateway's own wheel from APP_DIR
# plus every dependency as a binary wheel for the target's Python and platform, so the servers
# install with `pip --no-index` and need no access to PyPI.
#   build-wheelhouse.sh APP_DIR OUT_DIR PYTHON_VERSION PLATFORM...
# (pip does not widen a platform tag to older ones: list every tag the target accepts.)
# SOURCE_DATE_EPOCH makes the wheel reproducible, so an unchanged app/ gives an unchanged wheel
# (and the playbook stays idempotent).
set -eu
app="$1"; out="$2"; pyver="$3"
shift 3
platforms=""
for p in "$@"; do platforms="$platforms --platform $p"; done
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || python=python3

mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM
# Build from a copy so the source tree stays clean (setuptools writes build/ beside the sources).
mkdir "$work/src"
cp -R "$app" "$work/src/app"
[ -f "$app/../README.md" ] && cp "$app/../README.md" "$work/src/README.md"
rm -rf "$work/src/app/build" "$work/src/app"/src/*.egg-info
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheel" "$work/src/app"
wheel="$(ls "$work"/wheel/dicom_gw-*.whl)"
"$python" -m pip download --quiet --dest "$work/deps" --only-binary=:all: \
    --python-version "$pyver" --implementation cp $platforms "$wheel"
# Replace the old wheelhouse contents only when something differs (keeps file times stable).
rm -f "$work"/deps/dicom_gw-*.whl
cp "$wheel" "$work/deps/"
for f in "$out"/*.whl; do
    [ -e "$f" ] || continue
    [ -e "$work/deps/$(basename "$f")" ] || rm -f "$f"
done
for f in "$work"/deps/*.whl; do
    cmp -s "$f" "$out/$(basename "$f")" 2>/dev/null || cp "$f" "$out/"
done
# One reproducible archive for the transfer (one file to copy instead of dozens; the same wheels
# give the same bytes, so an unchanged wheelhouse is not copied again).
(cd "$out" && ls -1 ./*.whl | LC_ALL=C sort > "$work/list" &&
    tar --create --file "$work/wheelhouse.tar" --owner=0 --group=0 --numeric-owner \
        --mtime=@315532800 --mode=0644 --files-from "$work/list")
cmp -s "$work/wheelhouse.tar" "$out/wheelhouse.tar" 2>/dev/null || cp "$work/wheelhouse.tar" "$out/"
