#!/usr/bin/env bash
# The two static archives Debian does not ship in the form a self-contained doppel needs, built
# from Debian's own source packages (the same versions and security patches as the system's):
#   libcjson.a       libcjson-dev ships only the shared library;
#   libmicrohttpd.a  built without HTTPS: Debian's archive calls into gnutls, whose static link
#                    needs p11-kit (no .a in Debian) and a dozen more; doppel serve speaks plain
#                    HTTP (put a TLS proxy in front of it), so the TLS code is left out instead.
# Usage: static_deps.sh PREFIX   (lib/ and include/ under PREFIX; nothing outside it is changed:
# apt reads the deb-src index from a private list under PREFIX/apt, not /etc/apt).
set -euo pipefail
prefix=${1:?usage: static_deps.sh PREFIX}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
if [[ -f $prefix/lib/libcjson.a && -f $prefix/lib/libmicrohttpd.a ]]; then exit 0; fi
for tool in apt-get dpkg-source make cc ar; do
    command -v $tool >/dev/null || { echo "static_deps.sh: $tool not found (apt-get install dpkg-dev build-essential)" >&2; exit 1; }
done

apt_dir=$prefix/apt
mkdir -p "$apt_dir/lists/partial" "$prefix/src" "$prefix/lib" "$prefix/include"
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$apt_dir/sources.list" <<LIST
deb-src [signed-by=$keyring] http://deb.debian.org/debian $codename main
deb-src [signed-by=$keyring] http://deb.debian.org/debian-security $codename-security main
LIST
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
          -o "Dir::State::Lists=$apt_dir/lists" -o APT::Sandbox::User=root -qq)
cd "$prefix/src"
apt-get "${apt_opts[@]}" update
# the versions of the installed -dev packages, so headers and archives agree
cjson_ver=$(dpkg-query -W -f='${source:Version}' libcjson-dev)
mhd_ver=$(dpkg-query -W -f='${source:Version}' libmicrohttpd-dev)
apt-get "${apt_opts[@]}" source --download-only "cjson=$cjson_ver" "libmicrohttpd=$mhd_ver"
for dsc in cjson_*.dsc libmicrohttpd_*.dsc; do
    dir=$(basename "$dsc" .dsc)
    # apt checked the files against the signed index; dpkg-source lacks the uploaders' keys
    rm -rf "x-$dir" && dpkg-source -q -x "$dsc" "x-$dir" >/dev/null 2>&1
done

# cJSON: one file, compiled as Debian compiles it (its CMake build, minus the shared library)
cjson_src=$(ls -d x-cjson_*)
mkdir -p "$prefix/include/cjson"
cc -O2 -fPIC -std=c89 -c "$cjson_src/cJSON.c" -o cJSON.o
ar rcs "$prefix/lib/libcjson.a" cJSON.o
cp "$cjson_src/cJSON.h" "$prefix/include/cjson/"

# libmicrohttpd: the library only, HTTP without TLS, no libcurl/gnutls anywhere
mhd_src=$(ls -d x-libmicrohttpd_*)
(cd "$mhd_src" && ./configure -q --prefix="$prefix" --enable-static --disable-shared \
     --disable-https --without-gnutls --disable-curl --disable-doc --disable-examples \
     --with-pic >/dev/null && make -s -j"$(nproc)" -C src/microhttpd >/dev/null &&
     make -s -C src/microhttpd install >/dev/null && make -s -C src/include install >/dev/null)
test -f "$prefix/lib/libmicrohttpd.a"
echo "static_deps.sh: $prefix/lib/libcjson.a (cJSON $cjson_ver), $prefix/lib/libmicrohttpd.a ($mhd_ver, no HTTPS)"
