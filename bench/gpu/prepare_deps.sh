#!/bin/bash
# The Debian libraries the build needs, made portable to a machine that has a
# C compiler and nvcc but cannot install anything (the lent GPU machine:
# probably Ubuntu, no apt, no network). Run here, where Debian's mirror is
# reachable; the device machine then only unpacks and points the compiler at
# the result (run_device.sh does that through `env`).
#
# Usage (from the repository root):
#   bash bench/gpu/prepare_deps.sh [all]   download, unpack, pack, verify
#   bash bench/gpu/prepare_deps.sh download  .deb files into .deps/debs
#   bash bench/gpu/prepare_deps.sh unpack    .deps/debs or .deps/pack -> .deps/root
#   bash bench/gpu/prepare_deps.sh pack      .deps/root -> .deps/pack/deps-root.tar.xz
#   bash bench/gpu/prepare_deps.sh env       print the export lines for .deps/root
#   bash bench/gpu/prepare_deps.sh verify    build + a few tests with the system's
#                                            copies of these libraries hidden
#   bash bench/gpu/prepare_deps.sh list      the package closure, one a line
# Layout: .deps/debs (downloads, stays here), .deps/root (unpacked tree),
# .deps/pack/deps-root.tar.xz (the pruned tree, ~20 MiB: the only part a
# device call carries, as carry [".deps/pack"]). All of .deps is git-ignored.
set -euo pipefail

DEPS=${DEPS_DIR:-.deps}
ROOT=$DEPS/root
PACK=$DEPS/pack/deps-root.tar.xz
MULTIARCH=x86_64-linux-gnu

# What every machine that has a working C toolchain already has; carrying
# Debian's copies would shadow the host's libc and compiler runtime.
BASE_PKGS=" libc6 libc6-dev libc-dev-bin linux-libc-dev libcrypt1 libcrypt-dev libnsl-dev
  libtirpc-dev rpcsvc-proto libgcc-s1 libstdc++6 gcc-12-base libgomp1 debconf dpkg
  install-info "

die() { echo "prepare_deps: $*" >&2; exit 1; }

[ -f Makefile ] && [ -d bench/gpu ] || die "run from the repository root"

# The -dev packages come from the Makefile's DEB_PACKAGES so the two lists
# cannot drift; the toolchain and mandoc (man page lint only) stay out.
top_packages() {
    make --no-print-directory --eval 'print-deb-packages: ; @echo $(DEB_PACKAGES)' \
        print-deb-packages | tr ' ' '\n' | grep -v -x -E 'build-essential|pkg-config|mandoc|' || true
}

# One package's hard dependencies: the first alternative of each OR group,
# a virtual package replaced by its first provider.
direct_depends() {
    apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$1" 2>/dev/null | awk '
        /^ *\|?(Pre)?Depends:/ {
            if (!in_or) { name = $2; want = 1 } else want = 0
            in_or = ($1 ~ /^\|/)
            if (want) {
                if (name ~ /^</) virt = 1
                else { print name; virt = 0 }
            }
            next
        }
        /^    [^ ]/ { if (virt) { print $1; virt = 0 } next }
    ' | sed 's/:any$//'
}

closure() {
    local queue seen p d
    queue=$(top_packages)
    [ -n "$queue" ] || die "no DEB_PACKAGES found in the Makefile"
    seen=" "
    while [ -n "$queue" ]; do
        set -- $queue
        p=$1; shift; queue="$*"
        case "$seen$BASE_PKGS" in *" $p "*) continue ;; esac
        seen="$seen$p "
        for d in $(direct_depends "$p"); do
            case "$seen$BASE_PKGS" in *" $d "*) ;; *) queue="$queue $d" ;; esac
        done
    done
    echo $seen | tr ' ' '\n' | sort
}

cmd_list() { closure; }

cmd_download() {
    command -v apt-get >/dev/null || die "apt-get not found (download runs on a Debian machine)"
    mkdir -p "$DEPS/debs"
    local pkgs missing p
    pkgs=$(closure)
    missing=""
    for p in $pkgs; do
        ls "$DEPS/debs/${p}_"*.deb >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        # apt-get download needs fresh lists; update only when a name is unknown.
        if ! apt-cache show $missing >/dev/null 2>&1; then apt-get update -qq; fi
        (cd "$DEPS/debs" && apt-get download -q $missing)
    fi
    echo "$pkgs" > "$DEPS/debs/PACKAGES"
    echo "prepare_deps: $(ls "$DEPS"/debs/*.deb | wc -l) packages in $DEPS/debs ($(du -sh "$DEPS/debs" | cut -f1))"
}

# dpkg-deb where it exists; otherwise Python's ar + tar readers, so that
# unpacking works on any machine with python3.
extract_deb() {
    if command -v dpkg-deb >/dev/null; then
        dpkg-deb -x "$1" "$2"
    else
        python3 - "$1" "$2" <<'EOF'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
data = open(deb, "rb").read()
assert data[:8] == b"!<arch>\n", deb + ": not an ar archive"
off = 8
while off < len(data):
    name = data[off:off + 16].decode().strip().rstrip("/")
    size = int(data[off + 48:off + 58].decode().strip())
    body = data[off + 60:off + 60 + size]
    off += 60 + size + (size & 1)
    if name.startswith("data.tar"):
        with tarfile.open(fileobj=io.BytesIO(body)) as tf:
            # absolute links are expected here: fix_links rewrites them
            kw = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            tf.extractall(dest, **kw)
        break
else:
    sys.exit(deb + ": no data member")
EOF
    fi
}

# Debian's absolute links (libfoo.so -> /usr/lib/...) would point at the
# host's files: make each one relative, inside the tree.
fix_links() {
    local root_abs link target rel
    root_abs=$(cd "$ROOT" && pwd -P)
    while IFS= read -r -d '' link; do
        target=$(readlink "$link")
        case "$target" in
        /*) rel=$(realpath -m --relative-to="$(dirname "$link")" "$root_abs$target")
            ln -sfn "$rel" "$link" ;;
        esac
    done < <(find "$root_abs" -type l -print0)
    # update-alternatives links that openblas's postinst would make; the
    # paths env prints name the openblas-pthread folders too.
    local lib=$ROOT/usr/lib/$MULTIARCH
    if [ -e "$lib/openblas-pthread/libopenblas.so.0" ]; then
        ln -sfn openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
        [ -e "$lib/openblas-pthread/libopenblas.so" ] && ln -sfn openblas-pthread/libopenblas.so "$lib/libopenblas.so"
    fi
    return 0
}

# What neither the build nor the tests read: documentation and the static
# archives (libopenblas.a alone is tens of MiB).
prune() {
    rm -rf "$ROOT/usr/share/doc" "$ROOT/usr/share/man" "$ROOT/usr/share/lintian" \
           "$ROOT/usr/share/locale" "$ROOT/usr/share/bug" "$ROOT/usr/share/info"
    find "$ROOT" -name '*.a' -delete
    # ICU's other libraries and openblas's BLAS/LAPACK faces: nothing links
    # them (libxml2 needs libicuuc only, the Makefile -lopenblas).
    local lib=$ROOT/usr/lib/$MULTIARCH
    rm -f "$lib"/libicu{i18n,io,tu,test}.so* "$lib"/openblas-pthread/lib{blas,lapack}.so*
    find "$ROOT" -xtype l -delete
}

# Every library a carried library needs is carried too, or is one that any
# Linux with a C++ toolchain has.
check_needed() {
    command -v readelf >/dev/null || return 0
    local f n missing=""
    while IFS= read -r -d '' f; do
        for n in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            case $n in
            libc.so.6|libm.so.6|libgcc_s.so.1|libstdc++.so.6|ld-linux-x86-64.so.2|libpthread.so.0|libdl.so.2|librt.so.1)
                continue ;;
            esac
            [ -e "$ROOT/usr/lib/$MULTIARCH/$n" ] || [ -e "$ROOT/usr/lib/$MULTIARCH/openblas-pthread/$n" ] ||
                [ -e "$ROOT/lib/$MULTIARCH/$n" ] || missing="$missing ${f#$ROOT/}:$n"
        done
    done < <(find "$ROOT" -type f -name '*.so*' -print0)
    [ -z "$missing" ] || die "libraries needed but not carried:$missing"
}

check_links() {
    local bad
    bad=$(find "$ROOT" -type l ! -exec test -e {} \; -print)
    [ -z "$bad" ] || die "links that do not resolve inside $ROOT: $bad"
    bad=$(find "$ROOT" -type l -lname '/*' -print)
    [ -z "$bad" ] || die "absolute links left in $ROOT: $bad"
}

cmd_unpack() {
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    if compgen -G "$DEPS/debs/*.deb" >/dev/null; then
        local deb
        for deb in "$DEPS"/debs/*.deb; do extract_deb "$deb" "$ROOT"; done
        fix_links
        prune
    elif [ -f "$PACK" ]; then
        if command -v xz >/dev/null; then
            tar -C "$ROOT" -xJf "$PACK"
        else
            python3 -c 'import sys, tarfile
kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(sys.argv[1]).extractall(sys.argv[2], **kw)' "$PACK" "$ROOT"
        fi
    else
        die "nothing to unpack: neither $DEPS/debs/*.deb nor $PACK (run prepare_deps.sh here first)"
    fi
    check_links
    check_needed
    echo "prepare_deps: unpacked into $ROOT ($(du -sh "$ROOT" | cut -f1))"
}

cmd_pack() {
    [ -d "$ROOT/usr" ] || die "$ROOT is empty: run unpack first"
    check_links
    mkdir -p "$(dirname "$PACK")"
    rm -f "$PACK"
    # Sorted names, no owners and a fixed time: the same tree packs the same.
    tar -C "$ROOT" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
        -cf - . | xz -T2 -9 > "$PACK.tmp"
    mv "$PACK.tmp" "$PACK"
    echo "prepare_deps: $PACK $(du -h "$PACK" | cut -f1) (unpacked $(du -sh "$ROOT" | cut -f1))"
}

# The variables that make cc, ld, pkg-config and the loader use .deps/root.
# -L goes into CC as well: gcc searches LIBRARY_PATH only after
# /usr/lib/$MULTIARCH, so a host's own libjpeg.so (Ubuntu's is version 8)
# would win over Debian's libjpeg62 whose headers we compile against.
cmd_env() {
    local r
    r=$(cd "$ROOT" 2>/dev/null && pwd -P) || die "$ROOT missing: run unpack first"
    local inc="$r/usr/include:$r/usr/include/$MULTIARCH:$r/usr/include/$MULTIARCH/openblas-pthread"
    local lib="$r/usr/lib/$MULTIARCH:$r/usr/lib/$MULTIARCH/openblas-pthread:$r/lib/$MULTIARCH"
    echo "export DIT_DEPS_ROOT='$r'"
    echo "export CPATH='$inc'\${CPATH:+:\$CPATH}"
    echo "export LIBRARY_PATH='$lib'\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
    echo "export LD_LIBRARY_PATH='$lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    echo "export PKG_CONFIG_LIBDIR='$r/usr/lib/$MULTIARCH/pkgconfig:$r/usr/lib/$MULTIARCH/openblas-pthread/pkgconfig:$r/usr/share/pkgconfig'"
    echo "export PKG_CONFIG_SYSROOT_DIR='$r'"
    echo "export DIT_DEPS_CC='${CC:-cc} -L$r/usr/lib/$MULTIARCH -L$r/usr/lib/$MULTIARCH/openblas-pthread -L$r/lib/$MULTIARCH'"
}

# Build into a separate folder and run a few tests while every header,
# link-time library and run-time library of the top packages that this host
# has installed is hidden (a bind mount of an empty file over each, in a
# private mount namespace): the build can only have used .deps/root.
# Libraries the toolchain itself loads (zlib, zstd, ...) stay visible.
cmd_verify() {
    command -v unshare >/dev/null || die "verify needs unshare (util-linux)"
    local name=${VERIFY_NAME:-bench-deps} hide p f n=0
    hide=$(mktemp)
    : > "$hide.empty"
    for p in $(top_packages) libjansson4 libxxhash0 libopenblas0-pthread libcsv3 libarchive13 \
             libjpeg62-turbo libspng0 libwebp7 libwebpmux3 libwebpdemux2 libexif12 libisal2; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || continue
        dpkg -L "$p" | while read -r f; do
            case "$f" in /usr/include/*|/usr/lib/*|/lib/*) ;; *) continue ;; esac
            [ -f "$f" ] && [ ! -d "$f" ] && readlink -f "$f"
        done >> "$hide"
    done
    # The alternatives' links end in files that belong to the packages above.
    sort -u -o "$hide" "$hide"
    n=$(wc -l < "$hide")
    echo "prepare_deps: hiding $n system files of the packages during the build"
    eval "$(cmd_env)"
    local jobs=${JOBS:-2} kargs="" k rc=0
    for k in ${VERIFY_TESTS:-test_image_decode test_hash test_kernels.c:gemm index.sh}; do
        kargs="$kargs -k $k"
    done
    unshare --mount bash -c '
        set -e
        while read -r f; do mount --bind "$1" "$f"; done < "$2"
        # a hidden header reads as empty
        test ! -s /usr/include/jansson.h
        make -j"$3" CC="$DIT_DEPS_CC" OBJDIR=build/"$4" BINDIR=build/"$4"/bin \
            all build/"$4"/tests/run_tests
        ldd build/"$4"/bin/dit-index build/"$4"/tests/run_tests | sort -u |
            grep -E "jansson|xxhash|openblas|csv|archive|jpeg|spng|webp|exif|isal|xml2|icu|gfortran" \
            | tee build/"$4"/ldd.txt
        if grep -v -F "=> $DIT_DEPS_ROOT/" build/"$4"/ldd.txt; then
            echo "prepare_deps: the libraries above resolve outside $DIT_DEPS_ROOT"; exit 1
        fi
        DIT_BIN=$PWD/build/$4/bin DIT_TESTS=$PWD/tests DIT_EXAMPLES=$PWD/build/$4/examples \
            build/"$4"/tests/run_tests $5
    ' verify "$hide.empty" "$hide" "$jobs" "$name" "$kargs" || rc=$?
    rm -f "$hide" "$hide.empty"
    [ $rc = 0 ] && echo "prepare_deps: build with .deps/root only: OK"
    return $rc
}

cmd_all() {
    cmd_download
    cmd_unpack
    cmd_pack
    cmd_verify
    echo "prepare_deps: sizes: $(du -sh "$DEPS/debs" | cut -f1) debs, $(du -sh "$ROOT" | cut -f1) root," \
         "$(du -h "$PACK" | cut -f1) pack (carried)"
}

case "${1:-all}" in
all|download|unpack|pack|env|verify|list) "cmd_${1:-all}" ;;
*) die "usage: prepare_deps.sh [all|download|unpack|pack|env|verify|list]" ;;
esac
