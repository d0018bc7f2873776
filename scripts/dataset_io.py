"""Shared by the dataset tools (prepare_fashion_mnist.py, prepare_cifar.py): writing PNGs with
nothing but zlib and struct, and writing files so that a rerun or a crash leaves no half file."""
import os
import struct
import zlib


def png_bytes(width, height, channels, pixels):
    """An 8-bit gray (channels 1) or RGB (channels 3) PNG of `pixels` (rows packed, top first)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    stride = width * channels
    raw = b"".join(b"\x00" + pixels[y * stride:(y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) +
            chunk(b"IEND", b""))


def write_if_changed(path, data, force):
    """Writes `data` to `path` unless a file of that size is already there. Returns True if written."""
    if not force:
        try:
            if os.stat(path).st_size == len(data):
                return False
        except FileNotFoundError:
            pass
    with open(path, "wb") as f:
        f.write(data)
    return True


def write_text_atomic(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
