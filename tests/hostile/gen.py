#!/usr/bin/env python3
"""Regenerates the small hostile-input corpus next to this script.

Standard library only. Files that would be large (a 1 MiB field, a 10k-char
user_id) are built by tests/it/hostile.rs at runtime instead.
Run: python3 tests/hostile/gen.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
BOM = b"\xef\xbb\xbf"
H = b"user_id,first_name,last_name\n"

FILES = {
    "empty.csv": b"",
    "blank_lines_only.csv": b"\n\n  \n",
    "bom_only.csv": BOM,
    "header_only.csv": H,
    "header_only_no_newline.csv": b"user_id,first_name",
    # Data in the first row: it is taken as the header, user_id is missing.
    "no_header.csv": b"u1,Ann,Lee\nu2,Bob,Ray\n",
    "bom.csv": BOM + H + b"u1,Ann,Lee\nu2,Bob,Ray\n",
    "bom_twice.csv": BOM + BOM + H + b"u1,Ann,Lee\n",
    "crlf.csv": H.replace(b"\n", b"\r\n") + b"u1,Ann,Lee\r\nu2,Bob,Ray\r\n",
    "cr_only.csv": H.replace(b"\n", b"\r") + b"u1,Ann,Lee\ru2,Bob,Ray\r",
    "mixed_line_endings.csv": b"user_id,first_name,last_name\r\nu1,Ann,Lee\ru2,Bob,Ray\nu3,Cy,Dee\r\n",
    "blank_lines_between.csv": H + b"\nu1,Ann,Lee\n\n\nu2,Bob,Ray\n\n",
    # Quotes inside unquoted fields are literal characters to the csv crate.
    "stray_quotes.csv": H + b'u1,An"n,Lee\nu2,"Bob"by,Ray\nu3,Cy,De"e"\n',
    "unterminated_quote.csv": H + b'u1,Ann,Lee\nu2,"Bob,Ray\nu3,Cy,Dee\nu4,Di,Ng\n',
    "unterminated_quote_at_eof.csv": H + b'u1,Ann,Lee\nu2,Bob,"Ray',
    "quoted_newline_in_name.csv": H + b'u1,"An\nn",Lee\nu2,Bob,Ray\n',
    "ragged.csv": H + b"u1,Ann,Lee\nu2,Bob\nu3,Cy,Dee,extra\nu4\n,\nu5,Eve,Fox\n",
    "only_delimiters.csv": H + b",,\n,,\n",
    "duplicate_headers.csv": b"user_id,first_name,user_id\nu1,Ann,u1\n",
    "duplicate_headers_case.csv": b"user_id,first_name, FIRST_NAME \nu1,Ann,Ann\n",
    # Blank header cells are extra columns: allowed, ignored for the payload.
    "blank_header_cells.csv": b"user_id,,first_name,\nu1,x,Ann,y\n",
    "missing_first_name_column.csv": b"user_id,last_name\nu1,Lee\n",
    "semicolon_read_as_comma.csv": b"user_id;first_name\nu1;Ann\n",
    "header_spaces_and_case.csv": b"  USER_ID , First_Name \nu1,Ann\n",
    "nul_bytes.csv": H + b"u1,Ann,Lee\nu\x002,Bob,Ray\nu3,C\x00y,Dee\nu4,Di,N\x00g\nu5,Eve,Fox\n",
    "nul_in_header.csv": b"user_id,first\x00name\nu1,Ann\n",
    "invalid_utf8.csv": H + b"u1,Ann,Lee\nu2,Bob,Mu\xfcller\nu\xff3,Cy,Dee\nu4,\xc3\x28,Ng\nu5,Eve,Fox\n",
    "invalid_utf8_header.csv": b"user_id,first_name,Stra\xdfe\nu1,Ann,x\n",
    # windows-1252 bytes read as UTF-8 (no --encoding): rows are invalid.
    "windows1252.csv": b"user_id,first_name,last_name\nu1,Jos\xe9,M\xfcller\nu2,Ann,Lee\nu3,Fran\xe7ois,\x80uro\n",
    "utf16le_bom.csv": b"\xff\xfe" + "user_id,first_name\nu1,Zoë\n".encode("utf-16-le"),
    "binary_garbage.csv": bytes(range(256)) * 4,
    "formula_injection.csv": (
        "user_id,first_name,last_name,phone_number\n"
        "=1+2,Ann,Lee,\n"
        "+cmd,Bob,Ray,+1 415 555 0101\n"
        "-2+3,Cy,=HYPERLINK(\"http://x\"),\n"
        "@SUM(A1),=cmd|' /C calc'!A0,Dee,\n"
        "\tu5,Eve,Fox,\n"
        "u6,=1+1,+1,\n"
    ).encode(),
    "unicode_rtl.csv": (
        "user_id,first_name,last_name\n"
        "u1,محمد,العلي\n"
        "u2,שרה,כהן\n"
        "u3,Zoë,Ødegård\n"
        "u4,李,小龙\n"
        "u5,\U0001F600,Emoji\n"
        "u6,Ann\u202Egnp.exe,Lee\n"
        "u\u202E7,Bob,Ray\n"
        "u8,\u200FAnn,\u2067Lee\u2069\n"
        "u9,Ann\u200B,Lee\n"
    ).encode(),
    "control_chars.csv": (
        "user_id,first_name,last_name\n"
        "u1,Ann\u0007,Lee\n"
        "u2\u001B[31m,Bob,Ray\n"
        "u3,Cy,Dee\u0085\n"
        "u4,Di,Ng\n"
    ).encode(),
    "forbidden_name_chars.csv": (
        "user_id,first_name,last_name\n"
        "u1,Ann/Lee,x\nu2,<script>,x\nu3,Bob,$HOME\nu4,50%,x\nu5,Why?,x\nu6,a:b,x\nu7,Ok,Fine\n"
    ).encode(),
    "whitespace_only_fields.csv": H + b"   ,Ann,Lee\nu2,   ,Ray\n u3 , Cy , \n",
    "lone_quote_lines.csv": H + b'u1,Ann,Lee\n"\nu2,Bob,Ray\n',
    "empty_quoted_line.csv": H + b'u1,Ann,Lee\n""\nu2,Bob,Ray\n',
    "duplicate_ids.csv": H + b"u1,Ann,Lee\nu1,Ann,Lee\n U1 ,Bob,Ray\nu1 ,Cy,Dee\n",
}


def main():
    for name, data in sorted(FILES.items()):
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(FILES)} files to {HERE}")


if __name__ == "__main__":
    main()
