//! A hub-shaped HTTP/1.1 server on 127.0.0.1 for the tests: the revision API, HEAD/GET on
//! resolve URLs with the hub's headers (LFS files redirect to `/cdn/<sha256>`), Range requests,
//! a log of every request, and faults to switch on (cut a body short, lie about a size, corrupt
//! bytes, hide a file, require a token). One connection per request (`Connection: close`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

pub struct FakeFile {
    pub data: Vec<u8>,
    /// Stored with Git LFS: HEAD answers 302 to the CDN with X-Linked-Etag / X-Linked-Size.
    pub lfs: bool,
}

impl FakeFile {
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.data))
    }

    /// The name the cache gives the file's blob: the sha256 for LFS files, else the ETag
    /// (40 hex digits, like a git blob hash).
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            let mut hasher = Sha256::new();
            hasher.update(b"blob ");
            hasher.update(&self.data);
            hex(&hasher.finalize())[..40].to_string()
        }
    }
}

pub type Tree = BTreeMap<String, FakeFile>;

#[derive(Default)]
pub struct Repo {
    /// Branch or tag name -> commit.
    pub refs: BTreeMap<String, String>,
    /// Commit -> files.
    pub commits: BTreeMap<String, Tree>,
}

#[derive(Default)]
pub struct Faults {
    /// The next GET of this file sends this many body bytes, then closes the connection.
    pub cut: Option<(String, usize)>,
    /// HEAD on this file reports its size this much larger than it is.
    pub size_lie: Option<(String, u64)>,
    /// GETs of this file serve it with its first byte flipped.
    pub corrupt: Option<String>,
    /// Listed in the revision API, but 404 on resolve.
    pub hidden: Option<String>,
    /// Hub requests (not the CDN) must carry `Authorization: Bearer <token>`, else 401.
    pub token: Option<String>,
}

pub struct Request {
    pub method: String,
    /// As sent (percent-encoded).
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    endpoint: String,
    repos: BTreeMap<String, Repo>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Request>>,
}

pub struct FakeHub {
    pub endpoint: String,
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    pub fn start(repos: BTreeMap<String, Repo>, faults: Faults) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = format!("http://{addr}");
        let state = Arc::new(State {
            endpoint: endpoint.clone(),
            repos,
            faults: Mutex::new(faults),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let state = state.clone();
                        std::thread::spawn(move || {
                            let _ = serve(&state, stream);
                        });
                    }
                }
            })
        };
        FakeHub {
            endpoint,
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        let log = self.state.log.lock().unwrap();
        log.iter()
            .map(|r| Request {
                method: r.method.clone(),
                path: r.path.clone(),
                headers: r.headers.clone(),
            })
            .collect()
    }

    pub fn request_count(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An endpoint where nothing listens (connections are refused).
pub fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close.
    cut: Option<usize>,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
        }
    }

    fn header(mut self, name: &str, value: impl ToString) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn error(status: u16, code: &str) -> Response {
        Response::new(status).header("X-Error-Code", code)
    }
}

fn serve(state: &State, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let request = Request {
        method,
        path,
        headers,
    };
    let response = route(state, &request);
    state.log.lock().unwrap().push(request.clone_for_log());

    let mut out = stream;
    let reason = match response.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", response.status);
    let has_length = response
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_length {
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    out.write_all(head.as_bytes())?;
    if request.method != "HEAD" {
        let n = response
            .cut
            .unwrap_or(response.body.len())
            .min(response.body.len());
        out.write_all(&response.body[..n])?;
    }
    out.flush()?;
    out.shutdown(Shutdown::Both)
}

impl Request {
    fn clone_for_log(&self) -> Request {
        Request {
            method: self.method.clone(),
            path: self.path.clone(),
            headers: self.headers.clone(),
        }
    }
}

fn route(state: &State, request: &Request) -> Response {
    if let Some(sha) = request.path.strip_prefix("/cdn/") {
        let found = state
            .repos
            .values()
            .flat_map(|r| r.commits.values())
            .flat_map(|t| t.iter())
            .find(|(_, f)| f.lfs && f.sha256() == sha);
        return match found {
            Some((name, file)) => serve_bytes(state, request, name, file),
            None => Response::error(404, "EntryNotFound"),
        };
    }
    let faults = state.faults.lock().unwrap();
    if let Some(token) = &faults.token {
        if request.header("authorization") != Some(&format!("Bearer {token}")) {
            return Response::error(401, "RepoNotFound");
        }
    }
    drop(faults);
    let segments: Vec<&str> = request
        .path
        .trim_start_matches('/')
        .splitn(5, '/')
        .collect();
    match segments.as_slice() {
        ["api", "models", rest @ ..] => {
            let rest = rest.join("/");
            let parts: Vec<&str> = rest.splitn(4, '/').collect();
            let [org, name, "revision", revision] = parts.as_slice() else {
                return Response::error(404, "NotFound");
            };
            let (repo_id, revision) = (format!("{org}/{name}"), decode(revision));
            let Some(repo) = state.repos.get(&repo_id) else {
                return Response::error(404, "RepoNotFound");
            };
            let Some((commit, tree)) = lookup(repo, &revision) else {
                return Response::error(404, "RevisionNotFound");
            };
            let siblings: Vec<_> = tree
                .keys()
                .map(|f| serde_json::json!({ "rfilename": f }))
                .collect();
            let json = serde_json::json!({ "id": repo_id, "sha": commit, "siblings": siblings });
            let mut response = Response::new(200).header("Content-Type", "application/json");
            response.body = json.to_string().into_bytes();
            response
        }
        [org, name, "resolve", revision, file] => {
            let (repo_id, revision, file) =
                (format!("{org}/{name}"), decode(revision), decode(file));
            let Some(repo) = state.repos.get(&repo_id) else {
                return Response::error(404, "RepoNotFound");
            };
            let Some((commit, tree)) = lookup(repo, &revision) else {
                return Response::error(404, "RevisionNotFound");
            };
            let hidden = state.faults.lock().unwrap().hidden.as_deref() == Some(file.as_str());
            let Some(fake) = tree.get(&file).filter(|_| !hidden) else {
                return Response::error(404, "EntryNotFound");
            };
            let lie = match &state.faults.lock().unwrap().size_lie {
                Some((name, extra)) if *name == file && request.method == "HEAD" => *extra,
                _ => 0,
            };
            let size = fake.data.len() as u64 + lie;
            if fake.lfs {
                Response::new(302)
                    .header(
                        "Location",
                        format!("{}/cdn/{}", state.endpoint, fake.sha256()),
                    )
                    .header("X-Repo-Commit", &commit)
                    .header("ETag", format!("\"{}\"", &fake.etag()[..40]))
                    .header("X-Linked-Etag", format!("\"{}\"", fake.sha256()))
                    .header("X-Linked-Size", size)
                    .header("Content-Length", 0)
            } else if request.method == "HEAD" {
                Response::new(200)
                    .header("X-Repo-Commit", &commit)
                    .header("ETag", format!("\"{}\"", fake.etag()))
                    .header("Content-Length", size)
            } else {
                serve_bytes(state, request, &file, fake).header("X-Repo-Commit", &commit)
            }
        }
        _ => Response::error(404, "NotFound"),
    }
}

/// A file's bytes, honouring `Range: bytes=N-` and the cut / corrupt faults.
fn serve_bytes(state: &State, request: &Request, name: &str, file: &FakeFile) -> Response {
    let mut data = file.data.clone();
    let mut faults = state.faults.lock().unwrap();
    if faults.corrupt.as_deref() == Some(name) {
        data[0] ^= 0xff;
    }
    let start = request
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .map(|n| n.parse::<usize>().unwrap());
    let mut response = match start {
        Some(start) if start >= data.len() => return Response::new(416),
        Some(start) => Response::new(206)
            .header(
                "Content-Range",
                format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
            )
            .body(data[start..].to_vec()),
        None => Response::new(200).body(data),
    };
    response = response.header("ETag", format!("\"{}\"", file.etag()));
    if request.method == "GET" {
        if let Some((_, n)) = faults.cut.take_if(|(cut, _)| cut == name) {
            response.cut = Some(n);
        }
    }
    response
}

impl Response {
    fn body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }
}

fn lookup<'a>(repo: &'a Repo, revision: &str) -> Option<(String, &'a Tree)> {
    let commit = repo
        .refs
        .get(revision)
        .cloned()
        .unwrap_or_else(|| revision.to_string());
    let tree = repo.commits.get(&commit)?;
    Some((commit, tree))
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
