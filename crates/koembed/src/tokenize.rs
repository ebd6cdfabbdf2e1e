//! `koembed tokenize`: the token ids and pieces the encoder sees for each text, prompt
//! included, after truncation.

use std::fmt::Write as _;

use koembed_embed::{Embedder, TokenizedText};

use crate::cli::Context;
use crate::model::{self, ModelArg, PromptArgs};
use crate::{input, output};

pub const EXAMPLES: &str = "Examples:\n  \
    koembed tokenize --model models/e5-small \"Hello world\"\n  \
    koembed tokenize --model models/e5-small --prompt query --json \"데비안이란 무엇인가요?\"\n\n\
    Without TEXT arguments, texts are read from stdin, one per line.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// One JSON object per text: {"index", "text", "ids", "pieces", "n_tokens", "truncated"}.
    #[arg(long)]
    pub json: bool,
    /// The texts (default: read from stdin, one per line).
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let texts = input::args_or_stdin(&args.texts, "text", "texts")?;
    let embedder = model::load(&args.model, ctx)?;
    let prompt = args.prompt.prompt();
    let literal = model::check_prompt(&embedder, &prompt)?;
    let mut out = String::new();
    for (index, text) in texts.iter().enumerate() {
        let tokens = embedder.tokenize(text, &prompt).map_err(|e| match e {
            koembed_embed::EmbedError::Tokenize { reason, .. } => {
                koembed_embed::EmbedError::Tokenize { index, reason }
            }
            other => other,
        })?;
        if args.json {
            let pieces = embedder.tokenizer().pieces(&tokens.ids);
            let line = serde_json::json!({
                "index": index,
                "text": text,
                "prompt": literal,
                "ids": tokens.ids,
                "pieces": pieces,
                "n_tokens": tokens.ids.len(),
                "truncated": tokens.truncated,
            });
            let _ = writeln!(out, "{line}");
        } else {
            write_text(
                &mut out,
                &embedder,
                index,
                text,
                literal.as_deref(),
                &tokens,
            );
        }
    }
    output::write_stdout(out.as_bytes())
}

/// One text's report: ids and pieces as lists (`[0, 35378, 8999, 2]`), strings quoted as JSON.
fn write_text(
    out: &mut String,
    embedder: &Embedder,
    index: usize,
    text: &str,
    prompt: Option<&str>,
    tokens: &TokenizedText,
) {
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    let _ = writeln!(out, "text {index}: {}", quoted(text));
    if let Some(p) = prompt {
        let _ = writeln!(out, "  prompt     {}", quoted(p));
    }
    let _ = writeln!(out, "  tokens     {}", tokens.ids.len());
    let _ = writeln!(
        out,
        "  ids        {}",
        list(tokens.ids.iter().map(u32::to_string).collect())
    );
    let pieces = embedder.tokenizer().pieces(&tokens.ids);
    let _ = writeln!(
        out,
        "  pieces     {}",
        list(pieces.iter().map(|p| quoted(p)).collect())
    );
    let truncated = match tokens.truncated {
        true => format!(
            "yes (cut to {} tokens)",
            embedder.tokenizer().max_seq_length()
        ),
        false => "no".to_string(),
    };
    let _ = writeln!(out, "  truncated  {truncated}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_report_lists_ids_and_quoted_pieces() {
        let tiny =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/tiny-xlmr");
        let embedder = Embedder::load(&tiny).unwrap();
        let tokens = TokenizedText {
            ids: vec![0, 2],
            truncated: false,
        };
        let mut out = String::new();
        write_text(&mut out, &embedder, 3, "a \"b\"", Some("query: "), &tokens);
        assert_eq!(
            out,
            "text 3: \"a \\\"b\\\"\"\n  prompt     \"query: \"\n  tokens     2\n  ids        [0, 2]\n  \
             pieces     [\"<s>\", \"</s>\"]\n  truncated  no\n"
        );
    }
}
