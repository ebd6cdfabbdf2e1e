//! `koembed serve`: the flags of the embedding server; the server itself is `koembed-server`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use koembed_server::ServerConfig;

use crate::cli::Context;
use crate::model::{self, BatchTokensArg, ModelArg, PromptArgs};

pub const EXAMPLES: &str = "Examples:\n  \
    koembed serve --model models/e5-small --port 8080\n  \
    KOEMBED_API_KEY=secret koembed serve --model nlpai-lab/KoE5 --host 0.0.0.0 --prompt passage\n  \
    curl -s localhost:8080/v1/embeddings -H 'Content-Type: application/json' \\\n    \
    -d '{\"model\": \"e5\", \"input\": [\"데비안은 무엇인가요?\"], \"input_type\": \"query\"}'\n\n\
    Endpoints: POST /v1/embeddings (OpenAI), POST /embed, POST /tokenize, GET /info, \
    GET /health (text-embeddings-inference), GET /metrics (Prometheus). \
    SIGTERM or Ctrl-C: stop accepting, finish the requests in flight, exit 0.";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port; the bound address is printed on stderr).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// The default prompt, for requests that give neither prompt_name nor input_type.
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub batch_tokens: BatchTokensArg,
    /// Embedding requests queued or running at once; one more is answered 429 at once.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,
    /// Largest request body in bytes (413 past it).
    #[arg(long, value_name = "BYTES", default_value_t = 2 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_body_bytes: u32,
    /// Most inputs (texts) in one request (413 past it).
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_inputs: u32,
    /// Cut texts longer than the model's max length when a request does not say `truncate`
    /// (default: refuse them with 413).
    #[arg(long)]
    pub auto_truncate: bool,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health (default: the
    /// KOEMBED_API_KEY environment variable, if set).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Threads for HTTP and JSON (the encoder uses --threads).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub http_threads: u16,
}

pub fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let embedder = model::load(&args.model, ctx)?;
    let default_prompt = args.prompt.prompt();
    model::check_prompt(&embedder, &default_prompt)?;
    let api_key = args
        .api_key
        .or_else(|| std::env::var("KOEMBED_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let config = ServerConfig {
        model_name: args.model.model.clone(),
        max_batch_tokens: args.batch_tokens.max_batch_tokens as usize,
        max_concurrent_requests: args.max_concurrent_requests as usize,
        max_body_bytes: args.max_body_bytes as usize,
        max_inputs: args.max_inputs as usize,
        auto_truncate: args.auto_truncate,
        default_prompt,
        api_key,
        http_threads: args.http_threads as usize,
        before_batch: None,
    };
    let addr = SocketAddr::new(args.host, args.port);
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let threads = ctx.threads;
    let auth = if config.api_key.is_some() {
        ", API key required"
    } else {
        ""
    };
    koembed_server::run_until_signal(listener, Arc::new(embedder), config, |bound| {
        // Always printed (even with -q): scripts that pass --port 0 read the address here.
        eprintln!("koembed: listening on http://{bound} ({threads} encoder threads{auth})");
    })
    .context("serving")?;
    ctx.note("stopped");
    Ok(())
}
