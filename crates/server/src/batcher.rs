//! Dynamic batching: texts of concurrent requests merged into encoder calls by a token budget,
//! run on one compute thread (the encoder itself runs on rayon's pool), never on the async
//! runtime's threads.
//!
//! Requests queue in arrival order. Each encoder call takes texts from the oldest requests
//! first until the next text would pass `max_batch_tokens` (a text longer than the budget runs
//! alone), so a large request is cut into several calls and small requests that came after it
//! still share them. Texts of one call must agree on the number of prompt tokens left out of
//! pooling (nonzero only for models whose Pooling has `include_prompt: false`); a request that
//! differs waits for a later call. The vectors do not depend on the batch (the library
//! guarantees it), so merging is invisible to clients.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use koembed_embed::{EmbedOptions, Embedder, TokenizedText};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Called on the compute thread before each encoder call with its number of texts: lets tests
/// hold the compute thread (to fill the queue) or make a call panic.
pub type BeforeBatch = Arc<dyn Fn(usize) + Send + Sync>;

/// The raw vectors of one request (encoder, pooling and Dense; before Normalize and any cut),
/// in input order.
pub type RawVectors = Vec<Vec<f32>>;

/// Why a request got no vectors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("the encoder call failed: {0}")]
    Failed(String),
    #[error("the compute thread has stopped")]
    Stopped,
}

struct Job {
    texts: Vec<TokenizedText>,
    masked_prefix: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<RawVectors, BatchError>>,
}

/// A job being worked on: which of its texts have been scheduled and which are done.
struct Pending {
    job: Job,
    vectors: Vec<Option<Vec<f32>>>,
    next: usize,
    done: usize,
    started: bool,
}

/// The handle request handlers submit to; dropping it (and every clone) stops the thread once
/// the queue is empty.
#[derive(Clone)]
pub struct Batcher {
    sender: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the compute thread.
    pub fn start(
        embedder: Arc<Embedder>,
        max_batch_tokens: usize,
        metrics: Arc<Metrics>,
        before_batch: Option<BeforeBatch>,
    ) -> (Batcher, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("koembed-compute".into())
            .spawn(move || {
                ComputeLoop {
                    embedder,
                    max_batch_tokens: max_batch_tokens.max(1),
                    metrics,
                    before_batch,
                    pending: VecDeque::new(),
                }
                .run(receiver)
            })
            .expect("spawning the compute thread");
        (Batcher { sender }, thread)
    }

    /// Queues tokenized texts (prompt included) and waits for their raw vectors. Admission
    /// control (the bound on queued requests) is the caller's: see `AppState::admit`.
    pub async fn embed(
        &self,
        texts: Vec<TokenizedText>,
        masked_prefix: usize,
    ) -> Result<RawVectors, BatchError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            texts,
            masked_prefix,
            enqueued: Instant::now(),
            reply,
        };
        self.sender.send(job).map_err(|_| BatchError::Stopped)?;
        answer.await.unwrap_or(Err(BatchError::Stopped))
    }
}

struct ComputeLoop {
    embedder: Arc<Embedder>,
    max_batch_tokens: usize,
    metrics: Arc<Metrics>,
    before_batch: Option<BeforeBatch>,
    pending: VecDeque<Pending>,
}

impl ComputeLoop {
    fn run(mut self, receiver: mpsc::Receiver<Job>) {
        loop {
            if self.pending.is_empty() {
                match receiver.recv() {
                    Ok(job) => self.push(job),
                    Err(_) => return, // every Batcher is gone and nothing is left
                }
            }
            while let Ok(job) = receiver.try_recv() {
                self.push(job);
            }
            // A client that went away needs no vectors.
            self.pending.retain(|p| !p.job.reply.is_closed());
            if !self.pending.is_empty() {
                self.run_one_batch();
            }
        }
    }

    fn push(&mut self, job: Job) {
        let n = job.texts.len();
        self.pending.push_back(Pending {
            job,
            vectors: vec![None; n],
            next: 0,
            done: 0,
            started: false,
        });
    }

    /// Picks texts oldest request first up to the token budget, runs them, hands out the
    /// vectors and answers the requests that are complete.
    fn run_one_batch(&mut self) {
        let masked_prefix = self.pending[0].job.masked_prefix;
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut tokens = 0;
        'fill: for (p, pending) in self.pending.iter_mut().enumerate() {
            if pending.job.masked_prefix != masked_prefix {
                continue;
            }
            while pending.next < pending.job.texts.len() {
                let len = pending.job.texts[pending.next].ids.len();
                if !picks.is_empty() && tokens + len > self.max_batch_tokens {
                    break 'fill;
                }
                if !pending.started {
                    pending.started = true;
                    self.metrics
                        .queue_seconds
                        .observe(pending.job.enqueued.elapsed().as_secs_f64());
                }
                picks.push((p, pending.next));
                pending.next += 1;
                tokens += len;
            }
        }
        let batch: Vec<TokenizedText> = picks
            .iter()
            .map(|&(p, t)| self.pending[p].job.texts[t].clone())
            .collect();
        let started = Instant::now();
        let raw = EmbedOptions {
            normalize: Some(false),
            ..EmbedOptions::default()
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            if let Some(hook) = &self.before_batch {
                hook(batch.len());
            }
            self.embedder.embed_tokenized(&batch, masked_prefix, &raw)
        }));
        let took = started.elapsed();
        match result {
            Ok(Ok(vectors)) => {
                self.metrics.count_batch(batch.len(), tokens, took);
                for (&(p, t), row) in picks.iter().zip(vectors.rows()) {
                    let pending = &mut self.pending[p];
                    pending.vectors[t] = Some(row.to_vec());
                    pending.done += 1;
                }
                self.answer_complete();
            }
            Ok(Err(err)) => self.fail(&picks, err.to_string()),
            Err(panic) => self.fail(&picks, panic_message(&*panic)),
        }
    }

    /// Answers (and forgets) the requests whose texts are all done.
    fn answer_complete(&mut self) {
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for pending in self.pending.drain(..) {
            if pending.done == pending.job.texts.len() {
                let vectors = pending.vectors.into_iter().flatten().collect();
                let _ = pending.job.reply.send(Ok(vectors));
            } else {
                kept.push_back(pending);
            }
        }
        self.pending = kept;
    }

    /// Fails every request that had a text in the failed call; the others go on.
    fn fail(&mut self, picks: &[(usize, usize)], reason: String) {
        let mut failed = vec![false; self.pending.len()];
        for &(p, _) in picks {
            failed[p] = true;
        }
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for (pending, failed) in self.pending.drain(..).zip(failed) {
            if failed {
                let _ = pending
                    .job
                    .reply
                    .send(Err(BatchError::Failed(reason.clone())));
            } else {
                kept.push_back(pending);
            }
        }
        self.pending = kept;
    }
}

pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_string()
    }
}
