//! Reading texts: one per line, UTF-8. A line that is not valid UTF-8 is an error naming it;
//! nothing is dropped (an empty line is an empty text).

use std::io::BufRead;

use anyhow::bail;

/// Splits `reader` into lines (without `\n` / `\r\n`); `source` names the input in errors.
pub fn read_lines(mut reader: impl BufRead, source: &str) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        match std::str::from_utf8(&buf) {
            Ok(text) => texts.push(text.to_string()),
            Err(e) => bail!(
                "{source} line {line_no}: not valid UTF-8 (byte {} of the line)",
                e.valid_up_to() + 1
            ),
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_empty_lines_and_strips_line_ends() {
        let texts = read_lines(&b"a\r\n\nb c\nlast"[..], "input").unwrap();
        assert_eq!(texts, vec!["a", "", "b c", "last"]);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = read_lines(&b"ok\nbad \xff here\n"[..], "texts.txt").unwrap_err().to_string();
        assert!(err.contains("texts.txt line 2"), "{err}");
    }
}
