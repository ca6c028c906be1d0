//! One table written in every dialect spreadsheets use reads as the same
//! customers, and the reader's records equal a plain `csv` crate reader's (no
//! split, no quote check, no dialect detection): the manifest reader's
//! shortcuts held to a reference, on generated tables, within a time budget.

use arbtest::arbitrary::{Result, Unstructured};
use paystar_sync::manifest::{Format, ParseOptions, ParsedFile, csv_records, parse_bytes};

/// Time per property; `ARBTEST_BUDGET_MS` gives a longer search.
fn budget_ms() -> u64 {
    paystar_sync::config::process_env("ARBTEST_BUDGET_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500)
}

const FIELDS: [&str; 5] = [
    "Account Number",
    "First Name",
    "Last Name",
    "Email",
    "Autopay",
];

/// A table: a header and rows of cell values (any text a spreadsheet holds:
/// delimiters, quotes, line breaks in a notes column, spaces, accents).
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn cell(u: &mut Unstructured<'_>, alphabet: &[&str], max: usize) -> Result<String> {
    let mut out = String::new();
    for _ in 0..u.int_in_range(1..=max)? {
        out.push_str(u.choose(alphabet)?);
    }
    Ok(out)
}

fn table(u: &mut Unstructured<'_>) -> Result<Table> {
    let letters = ["a", "b", "Z", "é", "ü", " ", "-", "'"];
    let odd = ["a", ",", ";", "|", "\t", "\"", " ", "\n", "\r\n", "é", "x"];
    // Unknown columns anywhere among the customer's.
    let mut header: Vec<String> = FIELDS.iter().map(|f| (*f).to_owned()).collect();
    let extras = u.int_in_range(0..=2)?;
    for n in 0..extras {
        let at = u.int_in_range(0..=header.len())?;
        header.insert(at, format!("Notes {n}"));
    }
    let mut rows = Vec::new();
    for i in 0..u.int_in_range(1..=8)? {
        let row = header
            .iter()
            .map(|name| -> Result<String> {
                Ok(match name.as_str() {
                    "Account Number" => format!("{}{i}", cell(u, &["1", "2", "0"], 5)?),
                    "First Name" | "Last Name" => cell(u, &letters, 8)?.trim().to_owned() + "n",
                    "Email" => format!("{}@example.com", cell(u, &["a", "b", "c"], 6)?),
                    "Autopay" => (*u.choose(&["", "yes", "no", "TRUE", "maybe"])?).to_owned(),
                    _ => {
                        if u.ratio(1, 3)? {
                            String::new()
                        } else {
                            cell(u, &odd, 6)?
                        }
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        rows.push(row);
    }
    Ok(Table { header, rows })
}

/// The table as CSV text: quoted where a value needs it (or everywhere),
/// `delimiter` between values, `eol` after each line, blank lines and a row of
/// bare delimiters between rows where `u` says so.
fn write(
    t: &Table,
    delimiter: char,
    eol: &str,
    quote_all: bool,
    gaps: &[bool],
    trailing: bool,
) -> String {
    let quote = |v: &str| {
        let needs =
            v.contains([delimiter, '"', '\n', '\r']) || v.starts_with(' ') || v.ends_with(' ');
        if quote_all || needs {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_owned()
        }
    };
    let line = |cells: &[String]| -> String {
        let mut l: Vec<String> = cells.iter().map(|c| quote(c)).collect();
        if trailing {
            l.push(String::new()); // a trailing delimiter: an empty last column
        }
        l.join(&delimiter.to_string())
    };
    let mut out = line(&t.header) + eol;
    for (i, row) in t.rows.iter().enumerate() {
        if gaps.get(i).copied().unwrap_or(false) {
            out.push_str(eol);
        }
        out.push_str(&line(row));
        out.push_str(eol);
    }
    out
}

/// What a parse says about each customer, without where it is.
fn outcome(
    parsed: &std::result::Result<ParsedFile, paystar_sync::manifest::ManifestError>,
) -> String {
    match parsed {
        Err(e) => format!("file error: {}", e.reason),
        Ok(p) => {
            let rows: Vec<String> = p
                .rows
                .iter()
                .map(|r| {
                    let f = r.fields();
                    format!(
                        "{}:{} {}|{}|{}|{:?}",
                        r.line,
                        r.key(),
                        f.first_name,
                        f.last_name,
                        f.email,
                        r.autopay
                    )
                })
                .collect();
            let errors: Vec<String> = p
                .errors
                .iter()
                .map(|e| format!("{:?} {:?} {:?} {:?}", e.line, e.account, e.field, e.reason))
                .collect();
            format!("{rows:#?}\n{errors:#?}\n{:?}", p.rejected_keys)
        }
    }
}

fn opts() -> ParseOptions {
    ParseOptions {
        default_business_unit: Some("water-bill-pay".into()),
        ..ParseOptions::default()
    }
}

#[test]
fn a_table_reads_as_the_same_customers_in_every_dialect_spreadsheets_write() {
    let mut variants = 0;
    arbtest::arbtest(|u| {
        let t = table(u)?;
        let gaps: Vec<bool> = (0..t.rows.len())
            .map(|_| u.ratio(1, 5))
            .collect::<Result<_>>()?;
        let plain = write(&t, ',', "\n", false, &gaps, false);
        let reference = outcome(&parse_bytes(
            plain.as_bytes(),
            Format::Csv,
            "t.csv",
            &opts(),
        ));
        let delimiter = *u.choose(&[',', ';', '\t', '|'])?;
        let eol = *u.choose(&["\n", "\r\n", "\r"])?;
        let quote_all = u.ratio(1, 3)?;
        let trailing = u.ratio(1, 4)?;
        // A lone CR inside a value would be a line end in a CR file: those
        // tables are written with CRLF inside values, as Excel for Mac does not.
        if eol == "\r" && t.rows.iter().flatten().any(|v| v.contains('\n')) {
            return Ok(());
        }
        let text = write(&t, delimiter, eol, quote_all, &gaps, trailing);
        let mut bytes = Vec::new();
        let format = if delimiter == '\t' && u.ratio(1, 2)? {
            Format::Tsv
        } else {
            Format::Csv
        };
        match u.int_in_range(0..=3)? {
            0 => bytes.extend_from_slice(text.as_bytes()),
            1 => {
                bytes.extend_from_slice(b"\xEF\xBB\xBF");
                bytes.extend_from_slice(text.as_bytes());
            }
            2 => {
                bytes.extend_from_slice(b"\xFF\xFE");
                bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
            }
            _ => {
                bytes.extend_from_slice(b"\xFE\xFF");
                bytes.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
            }
        }
        let read = outcome(&parse_bytes(&bytes, format, "t.csv", &opts()));
        assert_eq!(
            read, reference,
            "{delimiter:?} {eol:?} quote_all={quote_all} trailing={trailing}\n{text}"
        );
        variants += 1;
        Ok(())
    })
    .budget_ms(budget_ms())
    .run();
    assert!(variants > 20, "{variants} variants");
}

/// Where the two differ by design: an empty CRLF line is a record of one
/// empty field to the manifest reader (it splits on LF) and no record to the
/// csv crate; the manifest reader skips such a row as blank.
fn blank(fields: &[String]) -> bool {
    fields.iter().all(String::is_empty)
}

#[test]
fn the_readers_records_equal_a_plain_csv_crate_readers() {
    let mut compared = 0;
    arbtest::arbtest(|u| {
        let t = table(u)?;
        let gaps: Vec<bool> = (0..t.rows.len())
            .map(|_| u.ratio(1, 5))
            .collect::<Result<_>>()?;
        let delimiter = *u.choose(&[',', ';', '\t', '|'])?;
        let eol = *u.choose(&["\n", "\r\n"])?;
        let quote_all = u.ratio(1, 3)?;
        let text = write(&t, delimiter, eol, quote_all, &gaps, false);
        let ours: Vec<Vec<String>> = csv_records(
            text.as_bytes(),
            Format::Csv,
            "t.csv",
            &ParseOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .into_iter()
        .map(|(_, fields)| fields)
        .filter(|fields| !blank(fields))
        .collect();
        // The reference: the csv crate as it comes (CR, LF and CRLF all end a
        // record; empty lines skipped), told the delimiter.
        let mut plain = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter as u8)
            .from_reader(text.as_bytes());
        let theirs: Vec<Vec<String>> = plain
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .filter(|fields: &Vec<String>| !blank(fields))
            .collect();
        assert_eq!(ours, theirs, "{delimiter:?} {eol:?}\n{text}");
        compared += 1;
        Ok(())
    })
    .budget_ms(budget_ms())
    .run();
    assert!(compared > 20, "{compared} tables");
}
