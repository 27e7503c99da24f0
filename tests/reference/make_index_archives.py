#!/usr/bin/env python3
"""Makes the zip fixtures for dit-index's archive tests, deterministically.

    python3 tests/reference/make_index_archives.py

tests/fixtures/index/classes.zip: the tests/fixtures/images/classes tree in
the webdataset layout (members in sorted order, fixed timestamps), so the
archive form can be compared with the folder form of the same images.
tests/fixtures/index/evil.zip: one good sample and one member whose name
climbs out of the archive root ("../escape.png").
tests/fixtures/index/special.tar: one good sample (with a .txt caption that
is a symbolic link) among members that are not regular files: a symbolic
link to /etc/passwd, a hard link, a character and a block device, a FIFO, a
directory named like an image, and a plain directory (the tree, passed over).
Other tar archives are made by the shell test itself with tar(1).
"""
import io
import os
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "..", "fixtures", "images")
OUT = os.path.join(HERE, "..", "fixtures", "index")
STAMP = (2020, 1, 1, 0, 0, 0)


def add(z, name, data):
    info = zipfile.ZipInfo(name, date_time=STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    z.writestr(info, data)


def special_tar(png):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        def member(name, kind, **kw):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = 1577836800
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            for k, v in kw.items():
                setattr(info, k, v)
            return info
        t.addfile(member("dir", tarfile.DIRTYPE))
        good = member("dir/good.png", tarfile.REGTYPE, size=len(png))
        t.addfile(good, io.BytesIO(png))
        t.addfile(member("dir/good.txt", tarfile.SYMTYPE, linkname="/etc/hostname"))
        t.addfile(member("link.jpg", tarfile.SYMTYPE, linkname="/etc/passwd"))
        t.addfile(member("hard.png", tarfile.LNKTYPE, linkname="dir/good.png"))
        t.addfile(member("tty.jpg", tarfile.CHRTYPE, devmajor=5, devminor=0))
        t.addfile(member("disk.png", tarfile.BLKTYPE, devmajor=8, devminor=0))
        t.addfile(member("pipe.webp", tarfile.FIFOTYPE))
        t.addfile(member("folder.jpg", tarfile.DIRTYPE))
    return buf.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    root = os.path.join(IMAGES, "classes")
    names = []
    for d, _, files in os.walk(root):
        for f in files:
            names.append(os.path.relpath(os.path.join(d, f), root))
    with zipfile.ZipFile(os.path.join(OUT, "classes.zip"), "w") as z:
        for n in sorted(names):
            with open(os.path.join(root, n), "rb") as f:
                add(z, n, f.read())
    with open(os.path.join(IMAGES, "good", "png_rgb8_33x17.png"), "rb") as f:
        png = f.read()
    with zipfile.ZipFile(os.path.join(OUT, "evil.zip"), "w") as z:
        add(z, "ok/sample.png", png)
        add(z, "ok/sample.txt", b"a good sample\n")
        add(z, "../escape.png", png)
    with open(os.path.join(OUT, "special.tar"), "wb") as f:
        f.write(special_tar(png))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
