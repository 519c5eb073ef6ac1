//! Property tests of the import's CSV path: any input gives a clean error or rows, never a
//! panic; whatever the export writes, the import reads back exactly.

use mailctl::commands::import::{CsvRows, Row};
use proptest::prelude::*;

/// Everything the reader makes of `input`: Err(exit code) for a refused header, else the rows.
fn parse(input: &[u8]) -> Result<Vec<Row>, i32> {
    let mut rows = CsvRows::new(input).map_err(|e| e.exit_code())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next_row().expect("reading from memory cannot fail") {
        out.push(row);
    }
    Ok(out)
}

fn line_of(row: &Row) -> u64 {
    match row {
        Row::Valid(c) => c.line,
        Row::Invalid(r) => r.line,
    }
}

/// Bytes that look a little like CSV: quotes, delimiters, line ends, BOMs, UTF-8 and not.
fn csvish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"email".to_vec()),
        Just(b"full_name".to_vec()),
        Just(b"name".to_vec()),
        Just(b"comment".to_vec()),
        Just(b",".to_vec()),
        Just(b";".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"a@example.com".to_vec()),
        Just("Ива́н 🎉".as_bytes().to_vec()),
        Just(b"\xff\xfe\xc3".to_vec()),
        Just(b"@".to_vec()),
        Just(b" ".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(code) = parse(&input) {
            prop_assert_eq!(code, 5);
        }
    }

    #[test]
    fn csv_like_input_gives_rows_or_a_header_error(body in csvish()) {
        for header in [&b"email,full_name,comment\n"[..], b"Comment;Name;EMAIL\r\n", b""] {
            let input = [header, &body[..]].concat();
            match parse(&input) {
                Err(code) => prop_assert_eq!(code, 5),
                Ok(rows) => {
                    let lines: Vec<u64> = rows.iter().map(line_of).collect();
                    prop_assert!(lines.windows(2).all(|w| w[0] < w[1]), "lines {:?}", lines);
                    prop_assert!(lines.iter().all(|&l| l >= 2));
                    for row in rows {
                        match row {
                            Row::Valid(c) => {
                                prop_assert!(!c.email.is_empty());
                                prop_assert_eq!(c.key, c.email.to_lowercase());
                                prop_assert!(!c.full_name.contains(['\n', '\r']));
                            }
                            Row::Invalid(r) => prop_assert!(!r.reason.is_empty()),
                        }
                    }
                }
            }
        }
    }

    /// What `clients export` writes (csv::Writer, default settings, the import's header) is read
    /// back field for field, whatever the text.
    #[test]
    fn export_format_round_trips(
        clients in prop::collection::vec(
            (
                "[a-z0-9][a-z0-9_%+-]{0,19}@[a-z0-9]{1,10}\\.[a-z]{2,6}",
                "[^\\r\\n\\p{Cc}]{0,40}",
                "([^\\p{Cc}]|\\r|\\n|\\t){0,60}",
            ),
            0..20,
        )
    ) {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["email", "full_name", "comment"]).unwrap();
        for (email, name, comment) in &clients {
            w.write_record([email, name.trim(), comment]).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let rows = parse(&bytes).expect("header");
        prop_assert_eq!(rows.len(), clients.len());
        for (row, (email, name, comment)) in rows.iter().zip(&clients) {
            match row {
                Row::Valid(c) => {
                    prop_assert_eq!(&c.email, email);
                    prop_assert_eq!(c.full_name.as_str(), name.trim());
                    prop_assert_eq!(&c.comment, comment);
                }
                Row::Invalid(r) => prop_assert!(false, "rejected {:?}: {}", email, r.reason),
            }
        }
    }
}
