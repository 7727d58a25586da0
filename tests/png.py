# tests/png.py - count the pixels of the given colours in a PNG (what
# chromium --screenshot writes: 8 bits a channel, RGB or RGBA, not
# interlaced), and those that are not the background (white)
#   python3 tests/png.py FILE.png RRGGBB...   ->   "RRGGBB=N ... other=N"
import struct
import sys
import zlib


def rows(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit("not a PNG")
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                sys.exit(f"unsupported PNG: depth {depth}, colour type {ctype}")
            bpp = 4 if ctype == 6 else 3
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, prev = zlib.decompress(idat), width * bpp, bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        yield [bytes(line[x:x + 3]).hex() for x in range(0, stride, bpp)]


want = {c.lower(): 0 for c in sys.argv[2:]}
other = 0
for row in rows(sys.argv[1]):
    for px in row:
        if px in want:
            want[px] += 1
        elif px != "ffffff":
            other += 1
print(" ".join(f"{c}={n}" for c, n in want.items()) + f" other={other}")
