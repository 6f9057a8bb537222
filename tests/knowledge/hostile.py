"""Files crafted against the parsers knowledge uses."""

from __future__ import annotations

import zlib

# Text-showing operators, each of which pypdf's text extraction turns into a handful of Python
# objects: some 3 million of them inflate from 170 KB to 70 MB, just under pypdf's 75 MB cap on
# one stream, and take gigabytes to extract.
_OPERATORS = b"BT /F1 1 Tf (x) Tj ET\n" * (70_000_000 // 22)


def pdf_bomb() -> bytes:
    """A valid one-page PDF of 170 KB whose page content, once inflated and extracted, needs
    far more memory than any parse is allowed (measured: past 256 MiB within 3 s)."""
    stream = zlib.compress(_OPERATORS, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def one_long_paragraph(size: int = 3_000_000) -> bytes:
    """Plain text without a blank line: one section the chunker must hold every token of at
    once (measured: some 140 bytes of memory per byte of text)."""
    sentence = b"The auditors counted crates of tin in the warehouse and noted the shipment left on time. "
    return sentence * (size // len(sentence))
