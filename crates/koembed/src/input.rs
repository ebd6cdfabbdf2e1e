//! Reading texts: one per line, or one JSON object per line with a text field (`.jsonl`).
//!
//! Plain lines: UTF-8, without `\n` / `\r\n`; nothing is dropped (an empty line is an empty
//! text). JSON Lines: blank lines are skipped; every other line must be a JSON object with the
//! field. Every error names the input and the line.

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context};

/// One input text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub text: String,
    /// `_id` or `id` of a JSON Lines record (a string, or a number written as JSON writes it).
    pub id: Option<String>,
    /// 1-based line number in the input.
    pub line: usize,
}

/// How the input is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Lines,
    /// JSON Lines, the text in this field.
    Jsonl {
        field: String,
    },
}

impl Layout {
    /// JSON Lines when a field is named or the file ends in `.jsonl` / `.ndjson`, else lines.
    pub fn detect(path: Option<&Path>, field: Option<&str>) -> Layout {
        let jsonl_name = path
            .and_then(|p| p.extension())
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"));
        match field {
            Some(f) => Layout::Jsonl {
                field: f.to_string(),
            },
            None if jsonl_name => Layout::Jsonl {
                field: "text".into(),
            },
            None => Layout::Lines,
        }
    }
}

/// Reads `path` (stdin when `None`) in the layout its name or `field` implies.
pub fn read_records(path: Option<&Path>, field: Option<&str>) -> anyhow::Result<Vec<Record>> {
    let layout = Layout::detect(path, field);
    match path {
        Some(path) if path != Path::new("-") => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            parse(
                std::io::BufReader::new(file),
                &path.display().to_string(),
                &layout,
            )
        }
        _ => parse(std::io::stdin().lock(), "stdin", &layout),
    }
}

/// Splits `reader` into records; `source` names the input in errors.
pub fn parse(reader: impl BufRead, source: &str, layout: &Layout) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for_each_line(reader, source, |line_no, text| {
        match layout {
            Layout::Lines => records.push(Record {
                text: text.to_string(),
                id: None,
                line: line_no,
            }),
            Layout::Jsonl { field } => {
                if !text.trim().is_empty() {
                    records.push(
                        json_record(text, field, line_no)
                            .with_context(|| format!("{source} line {line_no}"))?,
                    );
                }
            }
        }
        Ok(())
    })?;
    Ok(records)
}

/// Texts given as command-line arguments, else one per line from stdin; `what` / `plural`
/// name them in the error when there are neither (stdin is a terminal).
pub fn args_or_stdin(args: &[String], what: &str, plural: &str) -> anyhow::Result<Vec<String>> {
    use std::io::IsTerminal;
    if !args.is_empty() {
        return Ok(args.to_vec());
    }
    if std::io::stdin().is_terminal() {
        anyhow::bail!(
            "no {what}: give {} arguments, or {plural} on stdin (one per line)",
            what.to_uppercase()
        );
    }
    read_lines(std::io::stdin().lock(), "stdin")
}

/// Plain lines of `reader` (see the module doc).
pub fn read_lines(reader: impl BufRead, source: &str) -> anyhow::Result<Vec<String>> {
    Ok(parse(reader, source, &Layout::Lines)?
        .into_iter()
        .map(|r| r.text)
        .collect())
}

fn json_record(line: &str, field: &str, line_no: usize) -> anyhow::Result<Record> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not valid JSON ({e})"))?;
    let Some(object) = value.as_object() else {
        bail!("expected a JSON object with a \"{field}\" field");
    };
    let text = match object.get(field) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => bail!("field \"{field}\" is not a string but {}", kind(other)),
        None => {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            bail!(
                "no \"{field}\" field (the object has: {}); choose the field with --field",
                keys.join(", ")
            )
        }
    };
    let id = ["_id", "id"].iter().find_map(|k| match object.get(*k) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    Ok(Record {
        text,
        id,
        line: line_no,
    })
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Calls `f(line_number, text)` for every line, without its `\n` / `\r\n` (and without a
/// UTF-8 byte order mark at the start of the input).
fn for_each_line(
    mut reader: impl BufRead,
    source: &str,
    mut f: impl FnMut(usize, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {source}"))?
            == 0
        {
            return Ok(());
        }
        line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let bytes = if line_no == 1 {
            buf.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&buf)
        } else {
            &buf
        };
        match std::str::from_utf8(bytes) {
            Ok(text) => f(line_no, text)?,
            Err(e) => bail!(
                "{source} line {line_no}: not valid UTF-8 (byte {} of the line)",
                e.valid_up_to() + 1
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonl(field: &str) -> Layout {
        Layout::Jsonl {
            field: field.into(),
        }
    }

    #[test]
    fn keeps_empty_lines_and_strips_line_ends() {
        let texts = read_lines(&b"a\r\n\nb c\nlast"[..], "input").unwrap();
        assert_eq!(texts, vec!["a", "", "b c", "last"]);
    }

    #[test]
    fn strips_a_byte_order_mark_at_the_start_only() {
        let texts = read_lines(&b"\xef\xbb\xbfa\n\xef\xbb\xbfb"[..], "input").unwrap();
        assert_eq!(texts, vec!["a", "\u{feff}b"]);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = read_lines(&b"ok\nbad \xff here\n"[..], "texts.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("texts.txt line 2"), "{err}");
        let err = parse(&b"{\"text\": \"a\"}\n\xff\n"[..], "c.jsonl", &jsonl("text")).unwrap_err();
        assert!(
            format!("{err:#}").contains("c.jsonl line 2: not valid UTF-8"),
            "{err:#}"
        );
    }

    #[test]
    fn jsonl_reads_the_field_and_the_id_and_skips_blank_lines() {
        let input = b"{\"_id\": \"1.1\", \"text\": \"a\\nb\"}\n\n{\"id\": 7, \"body\": \"x\", \"text\": \"c\"}\n";
        let records = parse(&input[..], "c.jsonl", &jsonl("text")).unwrap();
        assert_eq!(
            records,
            vec![
                Record {
                    text: "a\nb".into(),
                    id: Some("1.1".into()),
                    line: 1
                },
                Record {
                    text: "c".into(),
                    id: Some("7".into()),
                    line: 3
                },
            ]
        );
        let records = parse(&input[..], "c.jsonl", &jsonl("body"));
        let err = format!("{:#}", records.unwrap_err());
        assert!(
            err.contains("c.jsonl line 1: no \"body\" field (the object has: _id, text)"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let cases: [(&[u8], &str); 3] = [
            (b"{\"text\": \"a\"}\nnot json\n", "line 2: not valid JSON"),
            (b"[1, 2]\n", "line 1: expected a JSON object"),
            (
                b"{\"text\": 3}\n",
                "line 1: field \"text\" is not a string but a number",
            ),
        ];
        for (input, expected) in cases {
            let err = format!(
                "{:#}",
                parse(input, "in.jsonl", &jsonl("text")).unwrap_err()
            );
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn layout_follows_the_field_and_the_extension() {
        assert_eq!(
            Layout::detect(Some(Path::new("a.txt")), None),
            Layout::Lines
        );
        assert_eq!(
            Layout::detect(Some(Path::new("a.JSONL")), None),
            jsonl("text")
        );
        assert_eq!(Layout::detect(None, Some("body")), jsonl("body"));
        assert_eq!(Layout::detect(None, None), Layout::Lines);
    }
}
