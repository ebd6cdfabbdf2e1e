//! The endpoints: OpenAI's `POST /v1/embeddings`; text-embeddings-inference's `POST /embed`,
//! `POST /tokenize`, `GET /info`, `GET /health`; and `GET /metrics`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use koembed_embed::Prompt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, Flavor};
use crate::inputs::{self, Inputs};
use crate::AppState;

/// Reads the body up to the size limit (413 past it) and parses it as JSON (400 when it is not
/// JSON or a field has the wrong type).
async fn read_json<T: DeserializeOwned>(state: &AppState, body: Body) -> Result<T, ApiError> {
    let limit = state.config.max_body_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::too_large(format!("the request body is larger than {limit} bytes"))
            .code("body_too_large")
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")).code("invalid_json"))
}

/// The options that both embedding endpoints share.
struct EmbedRequest {
    inputs: Inputs,
    param: &'static str,
    prompt: Prompt,
    truncate: bool,
    normalize: Option<bool>,
    dim: Option<usize>,
}

struct Embedded {
    vectors: Vec<Vec<f32>>,
    tokens: usize,
}

/// Checks the limits, tokenizes (on a blocking thread), waits for the batcher, and applies
/// Normalize and the cut.
async fn embed(state: &Arc<AppState>, request: EmbedRequest) -> Result<Embedded, ApiError> {
    let max_inputs = state.config.max_inputs;
    if request.inputs.len() > max_inputs {
        return Err(ApiError::too_large(format!(
            "{} inputs in one request; the limit is {max_inputs}",
            request.inputs.len()
        ))
        .param(request.param)
        .code("too_many_inputs"));
    }
    let embedder = state.embedder.clone();
    let EmbedRequest {
        inputs,
        param,
        prompt,
        truncate,
        normalize,
        dim,
    } = request;
    let tokenized = tokio::task::spawn_blocking(move || {
        inputs::tokenize(&embedder, &inputs, &prompt, truncate, param)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
    let raw = state
        .batcher
        .embed(tokenized.texts, tokenized.masked_prefix)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let model_normalizes = state.embedder.model_dir().normalize;
    let vectors = raw
        .into_iter()
        .map(|v| inputs::finish(v, model_normalizes, normalize, dim))
        .collect();
    Ok(Embedded {
        vectors,
        tokens: tokenized.tokens,
    })
}

fn answer(flavor: Flavor, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| e.into_response_as(flavor))
}

#[derive(Deserialize)]
struct OpenAiRequest {
    input: Option<Value>,
    #[allow(dead_code)]
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<u64>,
    input_type: Option<String>,
    prompt_name: Option<String>,
    truncate: Option<bool>,
}

/// `POST /v1/embeddings`.
pub async fn openai_embeddings(State(state): State<Arc<AppState>>, body: Body) -> Response {
    answer(Flavor::OpenAi, openai_embeddings_inner(&state, body).await)
}

async fn openai_embeddings_inner(state: &Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let request: OpenAiRequest = read_json(state, body).await?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format \"{other}\" is not supported: use float or base64"
            ))
            .param("encoding_format"))
        }
    };
    let request = EmbedRequest {
        inputs: Inputs::parse(request.input.as_ref(), "input")?,
        param: "input",
        prompt: inputs::choose_prompt(
            request.prompt_name.as_deref(),
            request.input_type.as_deref(),
            &state.config.default_prompt,
        )?,
        truncate: request.truncate.unwrap_or(state.config.auto_truncate),
        normalize: None,
        dim: inputs::check_dimensions(request.dimensions, state.embedder.dim())?,
    };
    let embedded = embed(state, request).await?;
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": state.config.model_name,
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    }))
    .into_response())
}

#[derive(Deserialize)]
struct TeiEmbedRequest {
    inputs: Option<Value>,
    normalize: Option<bool>,
    truncate: Option<bool>,
    prompt_name: Option<String>,
    input_type: Option<String>,
    dimensions: Option<u64>,
}

/// `POST /embed`: text-embeddings-inference's route; `normalize` defaults to true, as there.
pub async fn tei_embed(State(state): State<Arc<AppState>>, body: Body) -> Response {
    answer(Flavor::Tei, tei_embed_inner(&state, body).await)
}

async fn tei_embed_inner(state: &Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let request: TeiEmbedRequest = read_json(state, body).await?;
    let request = EmbedRequest {
        inputs: Inputs::parse(request.inputs.as_ref(), "inputs")?,
        param: "inputs",
        prompt: inputs::choose_prompt(
            request.prompt_name.as_deref(),
            request.input_type.as_deref(),
            &state.config.default_prompt,
        )?,
        truncate: request.truncate.unwrap_or(state.config.auto_truncate),
        normalize: Some(request.normalize.unwrap_or(true)),
        dim: inputs::check_dimensions(request.dimensions, state.embedder.dim())?,
    };
    Ok(Json(embed(state, request).await?.vectors).into_response())
}

#[derive(Deserialize)]
struct TokenizeRequest {
    inputs: Option<Value>,
    add_special_tokens: Option<bool>,
    prompt_name: Option<String>,
    input_type: Option<String>,
}

/// `POST /tokenize`: the ids and pieces the model sees for each text, prompt and special tokens
/// included, cut at the model's max length as `truncate: true` would cut them.
pub async fn tei_tokenize(State(state): State<Arc<AppState>>, body: Body) -> Response {
    answer(Flavor::Tei, tokenize_inner(&state, body).await)
}

async fn tokenize_inner(state: &Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let request: TokenizeRequest = read_json(state, body).await?;
    if request.add_special_tokens == Some(false) {
        return Err(ApiError::bad_request(
            "add_special_tokens=false is not supported: the model always sees its special tokens",
        )
        .param("add_special_tokens"));
    }
    let texts = match Inputs::parse(request.inputs.as_ref(), "inputs")? {
        Inputs::Texts(texts) => Inputs::Texts(texts),
        Inputs::Ids(_) => {
            return Err(
                ApiError::bad_request("'inputs' must be a string or an array of strings")
                    .param("inputs"),
            )
        }
    };
    if texts.len() > state.config.max_inputs {
        return Err(ApiError::too_large(format!(
            "{} inputs in one request; the limit is {}",
            texts.len(),
            state.config.max_inputs
        ))
        .param("inputs"));
    }
    let prompt = inputs::choose_prompt(
        request.prompt_name.as_deref(),
        request.input_type.as_deref(),
        &state.config.default_prompt,
    )?;
    let embedder = state.embedder.clone();
    let tokens = tokio::task::spawn_blocking(move || {
        let tokenized = inputs::tokenize(&embedder, &texts, &prompt, true, "inputs")?;
        Ok::<_, ApiError>(
            tokenized
                .texts
                .iter()
                .map(|t| {
                    let pieces = embedder.tokenizer().pieces(&t.ids);
                    t.ids
                        .iter()
                        .zip(pieces)
                        .map(|(id, text)| json!({"id": id, "text": text}))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
    Ok(Json(tokens).into_response())
}

/// `GET /info`.
pub async fn info(State(state): State<Arc<AppState>>) -> Response {
    let embedder = &state.embedder;
    let config = &state.config;
    let (prompts, _) = embedder.prompts();
    Json(json!({
        "model_id": config.model_name,
        "model_type": {"embedding": {"pooling": embedder.model_dir().pooling.describe()}},
        "dim": embedder.dim(),
        "model_dtype": embedder.encoder().dtype().name(),
        "max_input_length": embedder.tokenizer().max_seq_length(),
        "max_batch_tokens": config.max_batch_tokens,
        "max_concurrent_requests": config.max_concurrent_requests,
        "max_client_batch_size": config.max_inputs,
        "max_body_bytes": config.max_body_bytes,
        "auto_truncate": config.auto_truncate,
        "prompts": prompts,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// `GET /health`: 200 while the compute thread runs, 503 after it stopped.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.compute_alive() {
        (StatusCode::OK, "ok").into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the compute thread has stopped",
        )
        .into_response_as(Flavor::Tei)
    }
}

/// `GET /v1/models`: the one model this server runs.
pub async fn openai_models(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{"id": state.config.model_name, "object": "model", "created": 0, "owned_by": "koembed"}],
    }))
    .into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
