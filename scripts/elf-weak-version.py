#!/usr/bin/env python3
"""elf-weak-version.py LIB VERSION [--rename NEW]: marks LIB's requirement of symbol version VERSION
(e.g. GLIBC_2.36) weak (VER_FLG_WEAK in its .gnu.version_r entry), in place. The dynamic loader then
loads LIB on a system whose library lacks that version instead of refusing it; the symbols of that
version must then come from elsewhere (scripts/gpu-check.sh preloads a shim). --rename NEW (tests
only) points the entry at a suffix of its own name, e.g. LIBC_2.36, to simulate an older glibc.
ELF64 little-endian only. Prints what it changed; exits 1 when LIB has no such requirement."""
import struct
import sys

SHT_GNU_VERNEED, VER_FLG_WEAK = 0x6FFFFFFE, 0x2


def elf_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def main() -> int:
    path, version = sys.argv[1], sys.argv[2].encode()
    rename = sys.argv[4].encode() if len(sys.argv) > 4 and sys.argv[3] == "--rename" else None
    data = bytearray(open(path, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{path}: not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    changed = 0
    for sh in sections:
        if sh[1] != SHT_GNU_VERNEED:
            continue
        off, link, count = sh[4], sh[6], sh[7]
        strtab = sections[link][4]
        name_at = lambda o: bytes(data[strtab + o:data.index(b"\0", strtab + o)])
        vn = off
        for _ in range(count):
            _, cnt, file_, aux, nxt = struct.unpack_from("<HHIII", data, vn)
            va = vn + aux
            for _ in range(cnt):
                h, flags, other, name, vnxt = struct.unpack_from("<IHHII", data, va)
                if name_at(name) == version:
                    flags |= VER_FLG_WEAK
                    if rename:
                        name += len(version) - len(rename)
                        assert name_at(name) == rename, "--rename must be a suffix of VERSION"
                        h = elf_hash(rename)
                    struct.pack_into("<IHHII", data, va, h, flags, other, name, vnxt)
                    print(f"{path}: {name_at(name).decode()} from {name_at(file_).decode()} is now a weak requirement")
                    changed += 1
                va += vnxt
            vn += nxt
    if not changed:
        print(f"{path}: requires no {version.decode()}", file=sys.stderr)
        return 1
    open(path, "wb").write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
