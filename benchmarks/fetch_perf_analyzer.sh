#!/usr/bin/env bash
# Fetch Triton's perf_analyzer (the PyPI perf-analyzer wheel) and a Debian 13 loader root to run it.
# The wheel's binary needs glibc 2.38 and GLIBCXX 3.4.32; this is Debian 12 (glibc 2.36). As in
# csrc/fetch_ort_headers.sh, Debian 13's libc6, libstdc++6, libgcc-s1, libssl3t64 and zlib1g are
# downloaded with a private apt state (trixie sources) and unpacked with dpkg -x: nothing is installed
# on the system. Idempotent. Prints the command that runs perf_analyzer (loader, library path, binary).
set -euo pipefail
dest="${1:-build/perf_analyzer}"
version="${PERF_ANALYZER_VERSION:-2.60.0}"
python="${PYTHON:-.venv/bin/python}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
lib="$dest/root/usr/lib/x86_64-linux-gnu"
bin="$dest/wheel/perf_analyzer/bin/perf_analyzer"
if [ ! -f "$dest/.ready-$version" ]; then
  mkdir -p "$dest"/{state/lists/partial,cache/archives/partial,etc,root,debs,wheel}
  "$python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_38_x86_64 \
    -d "$dest/debs" "perf-analyzer==$version" >&2
  "$python" -m zipfile -e "$dest/debs/perf_analyzer-$version-"*.whl "$dest/wheel"
  chmod +x "$bin"
  echo "deb http://deb.debian.org/debian trixie main" >"$dest/etc/sources.list"
  opts=(-o "Dir::State=$dest/state" -o "Dir::State::Lists=$dest/state/lists" -o "Dir::Cache=$dest/cache"
        -o "Dir::Etc::SourceList=$dest/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" -qq update >&2
  (cd "$dest/debs" && apt-get "${opts[@]}" -qq download libc6 libstdc++6 libgcc-s1 libssl3t64 zlib1g >&2)
  for deb in "$dest"/debs/*.deb; do dpkg -x "$deb" "$dest/root"; done
  "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$bin" --version >&2
  touch "$dest/.ready-$version"
fi
echo "$lib/ld-linux-x86-64.so.2 --library-path $lib $bin"
