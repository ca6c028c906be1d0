#!/usr/bin/env python3
"""Writes tests/corpus/exports/: manifests shaped byte for byte as the tools
people use write them (Excel, Google Sheets, LibreOffice, Numbers, Windows
Notepad). Run from the repository root: python3 tests/corpus/make.py
The .xlsx files are written by the test itself with rust_xlsxwriter; what each
file must read as is in tests/corpus/expected.json."""
from pathlib import Path

OUT = Path(__file__).parent / "exports"
OUT.mkdir(exist_ok=True)


def write(name, text, encoding="utf-8", newline="\n", bom=b""):
    data = text.replace("\n", newline).encode(encoding)
    (OUT / name).write_bytes(bom + data)


# Excel "CSV UTF-8 (Comma delimited)": BOM, CRLF, quotes only where needed, the
# columns a billing system exports beside the customer's (Notes, Phone, Balance).
write("excel-csv-utf8.csv",
      "Account Number,Sub Account Number,First Name,Last Name,Email Address,Autopay,Notes,Phone,Balance\n"
      "100001,,Ada,Lovelace,ada@example.com,Yes,\"Called 3/4, wants paper bill\",555-0100,12.50\n"
      "100002,01,Charles,Babbage,charles@example.com,No,,555-0101,0\n"
      "100003,,Grace,Hopper,grace@example.com,,\"Said \"\"hi\"\"\",,\n",
      newline="\r\n", bom=b"\xef\xbb\xbf")

# Excel "CSV (Comma delimited)" on Windows: Windows-1252, CRLF, no BOM.
write("excel-csv-1252.csv",
      "Account Number,First Name,Last Name,Email Address,Autopay\n"
      "110001,José,Müller,jose@example.com,TRUE\n"
      "110002,Zoë,O’Brien,zoe@example.com,FALSE\n",
      encoding="cp1252", newline="\r\n")

# European Excel: ";" between fields, "," in decimals, BOM, CRLF.
write("excel-eu-semicolon.csv",
      "Account Number;First Name;Last Name;Email Address;Autopay;Balance\n"
      "120001;Émile;Zola;emile@example.com;ja;1.234,56\n"
      "120002;Ingrid;Bergman;ingrid@example.com;no;0,00\n"
      .replace(";ja;", ";yes;"),
      newline="\r\n", bom=b"\xef\xbb\xbf")

# Excel "CSV (Macintosh)": lines end in CR alone.
write("excel-macintosh.csv",
      "Account Number,First Name,Last Name,Email Address,Autopay\n"
      "130001,Steve,Wozniak,woz@example.com,yes\n"
      "130002,Susan,Kare,susan@example.com,\n",
      newline="\r")

# Excel "Unicode Text": UTF-16 LE with its BOM, tabs, CRLF; saved as .tsv.
write("excel-unicode-text.tsv",
      "Account Number\tFirst Name\tLast Name\tEmail Address\tAutopay\n"
      "140001\tAkira\tKurosawa\takira@example.com\tyes\n"
      "140002\tHaruki\tMurakami\tharuki@example.com\tno\n",
      encoding="utf-16-le", newline="\r\n", bom=b"\xff\xfe")

# The same saved with Excel's own extension, .txt: not read, a warning says how.
write("excel-unicode-text.txt",
      "Account Number\tFirst Name\tLast Name\tEmail Address\n"
      "149999\tNot\tRead\tnot.read@example.com\n",
      encoding="utf-16-le", newline="\r\n", bom=b"\xff\xfe")

# Google Sheets "Comma-separated values": UTF-8 without BOM, CRLF, no line end
# after the last row.
write("google-sheets.csv",
      "accountNumber,subAccountNumber,firstName,lastName,emailAddress,autopay\n"
      "150001,,Alan,Turing,alan@example.com,TRUE\n"
      "150002,A,Joan,Clarke,joan@example.com,FALSE",
      newline="\r\n")

# LibreOffice Calc with "Quote all text cells": every field quoted, LF.
write("libreoffice-quoted.csv",
      '"Account Number","First Name","Last Name","E-mail","Autopay"\n'
      '"160001","Linus","Torvalds","linus@example.com","1"\n'
      '"160002","Margaret","Hamilton","margaret@example.com","0"\n')

# Numbers "Export To CSV": UTF-8, LF, a title row above the table's header.
write("numbers-export.csv",
      "Customers,,,,\n"
      "Account #,First,Surname,Email,Autopay\n"
      "170001,Tim,Berners-Lee,tim@example.com,enrolled\n"
      "170002,Radia,Perlman,radia@example.com,unenrolled\n")

# Excel's hint line "sep=;" above a ";" file.
write("excel-sep-line.csv",
      "sep=;\n"
      "Account Number;First Name;Last Name;Email Address\n"
      "180001;Barbara;Liskov;barbara@example.com\n",
      newline="\r\n")

# Excel reformats 12-digit numbers: the account arrives as 1.23457E+11.
write("excel-scientific.csv",
      "Account Number,First Name,Last Name,Email Address,Autopay\n"
      "190001,Edsger,Dijkstra,edsger@example.com,yes\n"
      "1.23457E+11,Donald,Knuth,donald@example.com,yes\n",
      newline="\r\n", bom=b"\xef\xbb\xbf")

# A row error in the last column of a CRLF file: the message has no CR in it.
write("crlf-row-error.csv",
      "Account Number,First Name,Last Name,Email Address,Autopay\n"
      "200001,Ken,Thompson,ken@example.com,yes\n"
      "200002,Dennis,Ritchie,dennis@example.com,maybe\n",
      newline="\r\n")

# Excel's lock file beside an export that is open: not a manifest.
(OUT / "~$excel-csv-utf8.csv").write_bytes(b"\x0bJane Clerk" + b"\x00" * 40)

# An Excel 97-2003 workbook: not read, a warning says what to save it as.
(OUT / "old-export.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 56)

# Windows Notepad: UTF-8 with BOM, CRLF; the bad email is on line 9.
write("notepad-bom-crlf.yaml",
      "businessUnitSlug: water-bill-pay\n"
      "customers:\n"
      "  - accountNumber: \"210001\"\n"
      "    firstName: Frances\n"
      "    lastName: Allen\n"
      "    emailAddress: frances@example.com\n"
      "  - accountNumber: \"210002\"\n"
      "    firstName: Jean\n"
      "    lastName: Sammet\n"
      "    emailAddress: jean.example.com\n",
      newline="\r\n", bom=b"\xef\xbb\xbf")

# Indented with a tab on line 4.
write("tab-indented.yaml",
      "customers:\n"
      "  - accountNumber: \"220001\"\n"
      "    firstName: Niklaus\n"
      "\tlastName: Wirth\n"
      "    emailAddress: niklaus@example.com\n")

# Two documents, each with its business unit.
write("multi-document.yaml",
      "businessUnitSlug: water-bill-pay\n"
      "customers:\n"
      "  - accountNumber: \"230001\"\n"
      "    firstName: John\n"
      "    lastName: Backus\n"
      "    emailAddress: john@example.com\n"
      "---\n"
      "businessUnitSlug: electric-bill-pay\n"
      "customers:\n"
      "  - accountNumber: \"230002\"\n"
      "    firstName: Fran\n"
      "    lastName: Bilas\n"
      "    emailAddress: fran@example.com\n"
      "    autopay: false\n")

# A real surname YAML reads as nothing.
write("null-surname.yaml",
      "customers:\n"
      "  - accountNumber: \"240001\"\n"
      "    firstName: Christopher\n"
      "    lastName: Null\n"
      "    emailAddress: chris@example.com\n"
      "  - accountNumber: \"240002\"\n"
      "    firstName: Ada\n"
      "    lastName: Yes\n"
      "    emailAddress: ada.yes@example.com\n")
