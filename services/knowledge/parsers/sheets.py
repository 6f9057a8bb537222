"""Spreadsheets: Excel .xlsx/.xlsm (openpyxl), Excel 97-2003 .xls (xlrd), OpenDocument .ods
(odfpy), and delimited text .csv/.tsv (the csv module).

Each visible sheet is a group of sections with location "sheet <name>" and the sheet's name
as heading: its non-empty rows as a Markdown table whose first row is the header, in blocks
of bounded size with the header repeated atop each (tables.py), so each reads on its own.
A CSV or TSV file is one such table without a sheet name. Hidden sheets are skipped, with a
warning saying so.

Cells are their values, never formulas (openpyxl with data_only: the values Excel saved; xlrd
reads values only), shown as the cell's number format shows them where the library gives the
format: dates and times as ISO 8601 (2024-03-05, 2024-03-05 14:30), integers without ".0",
and the format's decimals, thousands separators, percent and currency signs. ODF cells are
the text the file says they show, dates as ISO 8601.

A document holds at most tables.MAX_ROWS rows (100,000) and MAX_CELLS cells: past either it
is refused with a ParseError saying so, rather than indexed in part. Macros are never run
(openpyxl and xlrd run none; openpyxl drops them, keep_vba=False).

A file declared application/vnd.ms-excel (.xls) that is really an .xlsx or CSV file is read
as what it is: Windows browsers declare that type for every .csv upload.
"""

from __future__ import annotations

import csv
import datetime
import io
import re

import openpyxl
import xlrd
from odf.element import Element
from odf.namespaces import OFFICENS, TABLENS

from services.knowledge.parsers.common import decode
from services.knowledge.parsers.containers import (
    EXCEL,
    ODS,
    OLE_MAGIC,
    PASSWORD_PROTECTED,
    PROTECTED_OFFICE_FILE,
    XLS,
    Kind,
    describe,
    is_zip,
    mismatch,
    open_zip,
    reading,
)
from services.knowledge.parsers.document import ParsedDocument, ParseError, Section
from services.knowledge.parsers.opendocument import (
    attribute,
    elements,
    hidden_table_styles,
    load_odf,
    meta_title,
    table_rows,
    text_of,
)
from services.knowledge.parsers.tables import RowBudget, markdown_blocks

CSV = Kind("a CSV file (.csv)", "CSV file")
TSV = Kind("a TSV file (.tsv)", "TSV file")
_SNIFF_CHARS = 16_384
_DELIMITERS = ",;\t|"


class _Workbook:
    def __init__(self, noun: str) -> None:
        self.budget = RowBudget(noun)
        self.sections: list[Section] = []
        self.warnings: list[str] = []

    def row(self, cells: list[str], rows: list[list[str]]) -> None:
        if any(cells):
            self.budget.take(len(cells))
            rows.append(cells)

    def sheet(self, name: str, rows: list[list[str]]) -> None:
        name = " ".join(name.split())
        self.sections.extend(Section(block, (name,) if name else (), location=f"sheet {name}" if name else "")
                             for block in markdown_blocks(rows))

    def hidden(self, name: str) -> None:
        self.warnings.append(f"the hidden sheet {name!r} was not read")

    def document(self, title: str = "") -> ParsedDocument:
        return ParsedDocument(" ".join(title.split()), self.sections, self.warnings)


# -- Excel ----------------------------------------------------------------------------------


def parse_xlsx(content: bytes) -> ParsedDocument:
    if not openpyxl.DEFUSEDXML:  # OPENPYXL_DEFUSEDXML=False in the environment
        raise RuntimeError("openpyxl must parse with defusedxml: unset OPENPYXL_DEFUSEDXML")
    open_zip(content, EXCEL)
    with reading(EXCEL.noun):
        book = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True,
                                      keep_vba=False, keep_links=False, rich_text=False)
        try:
            workbook = _Workbook(EXCEL.noun)
            for sheet in book.worksheets:
                if sheet.sheet_state != "visible":
                    workbook.hidden(sheet.title)
                    continue
                # The stored dimensions may claim a million rows of padding; the rows are read as stored.
                sheet.reset_dimensions()
                rows: list[list[str]] = []
                for row in sheet.iter_rows():
                    workbook.row([format_value(cell.value, cell.number_format) if cell.value is not None else ""
                                  for cell in row], rows)
                workbook.sheet(sheet.title, rows)
            return workbook.document(book.properties.title or "")
        finally:
            book.close()


def parse_xls(content: bytes) -> ParsedDocument:
    what = describe(content)
    if not content.startswith(OLE_MAGIC):
        # Mislabelled uploads: see the module's docstring.
        if is_zip(content) and what == EXCEL.description:
            return parse_xlsx(content)
        if what == "a text file":
            return parse_csv(content)
        raise mismatch(content, XLS)
    if what == PROTECTED_OFFICE_FILE:
        raise ParseError(PASSWORD_PROTECTED)
    if what != XLS.description:
        raise mismatch(content, XLS)
    with reading(XLS.noun):
        try:
            book = xlrd.open_workbook(file_contents=content, formatting_info=True, on_demand=True,
                                      logfile=io.StringIO())
        except xlrd.XLRDError as error:
            if "encrypted" in str(error).lower():
                raise ParseError(PASSWORD_PROTECTED) from None
            raise
        try:
            workbook = _Workbook(XLS.noun)
            for index in range(book.nsheets):
                sheet = book.sheet_by_index(index)
                if sheet.visibility:
                    workbook.hidden(sheet.name)
                    continue
                rows: list[list[str]] = []
                for number in range(sheet.nrows):
                    workbook.row([_xls_cell(book, cell) for cell in sheet.row(number)], rows)
                workbook.sheet(sheet.name, rows)
                book.unload_sheet(index)
            return workbook.document()
        finally:
            book.release_resources()


def _xls_cell(book: xlrd.Book, cell: xlrd.sheet.Cell) -> str:
    kind, value = cell.ctype, cell.value
    if kind == xlrd.XL_CELL_TEXT:
        return value
    if kind == xlrd.XL_CELL_BOOLEAN:
        return format_value(bool(value))
    if kind == xlrd.XL_CELL_ERROR:
        return xlrd.error_text_from_code.get(value, "#ERROR")
    if kind not in (xlrd.XL_CELL_NUMBER, xlrd.XL_CELL_DATE):
        return ""
    try:
        number_format = book.format_map[book.xf_list[cell.xf_index].format_key].format_str
    except (IndexError, KeyError, TypeError):
        number_format = "General"
    if kind == xlrd.XL_CELL_DATE:
        try:
            moment = xlrd.xldate_as_datetime(value, book.datemode)
        except (xlrd.xldate.XLDateError, ValueError, OverflowError):
            return format_value(value)
        return format_value(moment.time() if value < 1 else moment, number_format)
    return format_value(value, number_format)


# -- OpenDocument ---------------------------------------------------------------------------


def parse_ods(content: bytes) -> ParsedDocument:
    document = load_odf(content, ODS)
    with reading(ODS.noun):
        workbook = _Workbook(ODS.noun)
        hidden = hidden_table_styles(document)
        for table in elements(document.spreadsheet):
            if table.qname != (TABLENS, "table"):
                continue
            name = attribute(table, TABLENS, "name")
            if attribute(table, TABLENS, "style-name") in hidden:
                workbook.hidden(name)
                continue
            workbook.sheet(name, table_rows(table, _ods_cell, workbook.budget))
        return workbook.document(meta_title(document))


def _ods_cell(cell: Element) -> str:
    kind = attribute(cell, OFFICENS, "value-type")
    if kind == "date":
        try:
            return format_value(datetime.datetime.fromisoformat(attribute(cell, OFFICENS, "date-value")))
        except ValueError:
            pass
    shown = " ".join(text_of(cell).split())
    if shown or kind not in ("float", "percentage", "currency"):
        return shown
    try:
        return format_value(float(attribute(cell, OFFICENS, "value")))
    except ValueError:
        return ""


# -- delimited text -------------------------------------------------------------------------


def parse_csv(content: bytes) -> ParsedDocument:
    return _delimited(content, CSV, None)


def parse_tsv(content: bytes) -> ParsedDocument:
    return _delimited(content, TSV, "\t")


def _delimited(content: bytes, kind: Kind, delimiter: str | None) -> ParsedDocument:
    if describe(content) not in ("a text file", "empty"):
        raise mismatch(content, kind)
    text = decode(content)
    if delimiter is None:
        sample = text[:_SNIFF_CHARS]
        if len(text) > _SNIFF_CHARS and "\n" in sample:
            sample = sample[:sample.rindex("\n")]
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
        except csv.Error:  # one column, or no clear delimiter
            delimiter = ","
    workbook = _Workbook(kind.noun)
    rows: list[list[str]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            workbook.row(row, rows)
    except csv.Error as error:
        raise ParseError(f"line {reader.line_num} of the {kind.noun} cannot be read (an unclosed quote "
                         "or a field too long)", detail=str(error)) from None
    workbook.sheet("", rows)
    return workbook.document()


# -- number formats -------------------------------------------------------------------------

_QUOTED = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]|_.|\*.')
_CURRENCY = re.compile(r"\[\$([^\]-]*)(?:-[^\]]*)?\]")
_PLACEHOLDERS = re.compile(r"[0#?]")


def format_value(value: object, number_format: str = "General") -> str:
    """A cell's value as its number format shows it, in the subset described in the module's
    docstring; anything else as Excel's General format would show it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime.datetime):
        return _moment(value, number_format)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        return value.isoformat(timespec="seconds" if value.second else "minutes")
    if isinstance(value, datetime.timedelta):
        seconds = int(value.total_seconds())
        sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
        return f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if isinstance(value, (int, float)):
        return _number(value, number_format or "General")
    return str(value)


def _moment(value: datetime.datetime, number_format: str) -> str:
    tokens = _QUOTED.sub("", number_format).lower().strip()
    if tokens in ("general", ""):
        has_date, has_time = True, value.time() != datetime.time(0)
    else:
        has_time = "h" in tokens or "s" in tokens
        has_date = "y" in tokens or "d" in tokens or not has_time
    if has_date and (not has_time or value.time() == datetime.time(0)):
        return value.date().isoformat()
    clock = value.time().isoformat(timespec="seconds" if value.second else "minutes")
    return f"{value.date().isoformat()} {clock}" if has_date else clock


def _number(value: float, number_format: str) -> str:
    sections = _split_sections(number_format)
    negative = value < 0
    section = sections[1] if negative and len(sections) > 1 and sections[1] else sections[0]
    signed = not (negative and len(sections) > 1)  # a negative section shows its own sign
    bare = _QUOTED.sub("", section)
    placeholders = [match.start() for match in _PLACEHOLDERS.finditer(bare)]
    if section.strip().lower() in ("general", "@", "") or not placeholders or "/" in bare:
        return _general(value)  # fractions too
    magnitude = abs(value) * (100 if "%" in bare else 1)
    integer_part, _, fraction = bare.partition(".")
    decimals = len(_PLACEHOLDERS.findall(fraction.split("E")[0].split("e")[0]))
    if "E+" in bare.upper() or "E-" in bare.upper():
        digits = f"{magnitude:.{decimals}E}"
    elif "," in integer_part.strip(",") and _PLACEHOLDERS.search(integer_part):
        digits = f"{magnitude:,.{decimals}f}"
    else:
        digits = f"{magnitude:.{decimals}f}"
    first, last = _literal_span(section)
    prefix, suffix = _literal(section[:first]), _literal(section[last:])
    return f"{'-' if negative and signed else ''}{prefix}{digits}{suffix}"


def _general(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.15g}"


def _split_sections(number_format: str) -> list[str]:
    sections, current, quoted = [], [], False
    for char in number_format:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            sections.append("".join(current))
            current = []
        else:
            current.append(char)
    sections.append("".join(current))
    return sections


def _literal_span(section: str) -> tuple[int, int]:
    """Where the number is in a format section: from its first placeholder to its last
    (a decimal point, comma, exponent or percent sign after it belong to the number too)."""
    first = last = -1
    position = 0
    while position < len(section):
        match = _QUOTED.match(section, position)
        if match:
            position = match.end()
            continue
        if section[position] in "0#?":
            first = position if first < 0 else first
            last = position + 1
        position += 1
    return max(first, 0), max(last, 0)


def _literal(text: str) -> str:
    """The characters a format section prints around its number: quoted text, escaped
    characters, currency signs, percent signs; not colours, conditions or paddings."""
    out = []
    position = 0
    while position < len(text):
        char = text[position]
        currency = _CURRENCY.match(text, position)
        if currency:
            out.append(currency.group(1))
            position = currency.end()
        elif char == "[":
            end = text.find("]", position)
            position = len(text) if end < 0 else end + 1
        elif char == '"':
            end = text.find('"', position + 1)
            out.append(text[position + 1:len(text) if end < 0 else end])
            position = len(text) if end < 0 else end + 1
        elif char == "\\" and position + 1 < len(text):
            out.append(text[position + 1])
            position += 2
        elif char == "_" and position + 1 < len(text):
            out.append(" ")
            position += 2
        elif char == "*" and position + 1 < len(text):
            position += 2
        else:
            out.append(char)
            position += 1
    return "".join(out)
