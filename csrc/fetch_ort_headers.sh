#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ API headers (Debian 13 package libonnxruntime-dev) into a build folder.
# No PyPI wheel ships them. The package is downloaded with a private apt state (trixie sources) and
# unpacked with dpkg -x: nothing is installed on the system. Prints the include directory.
set -euo pipefail
dest="${1:-build/onnxruntime-dev}"
inc="$dest/root/usr/include/onnxruntime"
if [ -f "$inc/onnxruntime_cxx_api.h" ]; then echo "$inc"; exit 0; fi
mkdir -p "$dest"/{state/lists/partial,cache/archives/partial,etc,root}
dest="$(cd "$dest" && pwd)"
echo "deb http://deb.debian.org/debian trixie main" >"$dest/etc/sources.list"
opts=(-o "Dir::State=$dest/state" -o "Dir::State::Lists=$dest/state/lists" -o "Dir::Cache=$dest/cache"
      -o "Dir::Etc::SourceList=$dest/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "APT::Sandbox::User=root")
apt-get "${opts[@]}" -qq update >&2
(cd "$dest" && apt-get "${opts[@]}" -qq download libonnxruntime-dev >&2)
dpkg -x "$dest"/libonnxruntime-dev_*.deb "$dest/root"
test -f "$dest/root/usr/include/onnxruntime/onnxruntime_cxx_api.h"
echo "$dest/root/usr/include/onnxruntime"
