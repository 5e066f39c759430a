//! Downloads that are verified, cached, resumable and never half-written.
//!
//! A file is downloaded to `NAME.part` beside its final place and renamed only once its sha256
//! matches the manifest, so the final name always holds a complete, verified file. An interrupted
//! transfer leaves the `.part` behind and the next attempt asks the server for the rest
//! (`Range`); a server that ignores the range gets the file again from the start. A file already
//! present and verified is never downloaded again, so everything works offline once fetched.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::DataError;
use crate::archive::{ExtractLimits, extract};
use crate::manifest::{Manifest, ManifestFile};
use crate::part::part_path;

/// The environment variable that names the data directory.
pub const DATA_ENV: &str = "KILN_DATA";

/// Where data sets are cached: `explicit` (a `--data-dir` flag), else `$KILN_DATA`, else the
/// user cache directory's `kiln/` (`~/.cache/kiln` on Linux), else `./kiln-data`.
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    match std::env::var_os(DATA_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => dirs::cache_dir().map_or_else(|| PathBuf::from("kiln-data"), |d| d.join("kiln")),
    }
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut f = File::open(path).map_err(DataError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(DataError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Further attempts after a failed one (network errors, truncated bodies, 5xx).
    pub retries: u32,
    /// Wait before the first retry; doubled each time.
    pub backoff: Duration,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Give up on a connection that sends nothing for this long.
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { retries: 3, backoff: Duration::from_secs(1), progress: true, timeout: Duration::from_secs(60) }
    }
}

/// What [`fetch_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The file was already present and verified: no network used.
    Cached,
    /// Downloaded and verified.
    Downloaded {
        /// Bytes transferred by the request that completed the file (after a resume, only the
        /// rest).
        bytes: u64,
    },
}

/// Makes sure `dest` holds the file at `url` with sha256 `sha256`, downloading it if needed.
pub fn fetch_file(url: &str, dest: &Path, sha256: &str, options: &FetchOptions) -> Result<Fetched, DataError> {
    if dest.is_file() && sha256_file(dest)? == sha256 {
        return Ok(Fetched::Cached);
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(DataError::io(parent))?;
    }
    let part = part_path(dest);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(options.timeout)
        .timeout_read(options.timeout)
        .user_agent(concat!("kiln-data/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut total = 0;
    let mut attempt = 0;
    loop {
        let result = download_once(&agent, url, &part, options.progress).and_then(|(bytes, resumed)| {
            total = bytes;
            let found = sha256_file(&part)?;
            if found == sha256 {
                return Ok(());
            }
            // Never keep bytes that do not verify. A resumed file may have a stale start (the
            // file changed on the server): that is worth one fresh try; a fresh one is not.
            std::fs::remove_file(&part).map_err(DataError::io(&part))?;
            if resumed {
                Err(Attempt::Retry(format!("resumed download has sha256 {found}, starting again")))
            } else {
                Err(Attempt::Fatal(DataError::Checksum { path: dest.to_path_buf(), expected: sha256.into(), found }))
            }
        });
        match result {
            Ok(()) => {
                std::fs::rename(&part, dest).map_err(DataError::io(dest))?;
                return Ok(Fetched::Downloaded { bytes: total });
            }
            Err(Attempt::Retry(message)) if attempt < options.retries => {
                std::thread::sleep(options.backoff * 2u32.saturating_pow(attempt));
                attempt += 1;
                if options.progress {
                    eprintln!("{url}: {message}; retrying ({attempt}/{})", options.retries);
                }
            }
            Err(Attempt::Retry(message)) => {
                let kept = match std::fs::metadata(&part) {
                    Ok(m) if m.len() > 0 => format!("; {} kept for resuming", part.display()),
                    _ => String::new(),
                };
                return Err(DataError::Download {
                    url: url.into(),
                    message: format!("{message} (gave up after {} attempts{kept})", attempt + 1),
                });
            }
            Err(Attempt::Fatal(e)) => return Err(e),
        }
    }
}

enum Attempt {
    /// Worth another try (network trouble, truncated body, server error).
    Retry(String),
    /// Not worth another try (404, checksum mismatch, local I/O error).
    Fatal(DataError),
}

impl From<DataError> for Attempt {
    fn from(e: DataError) -> Self {
        Attempt::Fatal(e)
    }
}

/// One request: resumes `part` if it has bytes, appends what arrives; returns the bytes received
/// and whether they were appended to earlier ones.
fn download_once(agent: &ureq::Agent, url: &str, part: &Path, progress: bool) -> Result<(u64, bool), Attempt> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, _)) if have > 0 => {
            // The part is as long as the file or longer: start again.
            std::fs::remove_file(part).map_err(DataError::io(part))?;
            return Err(Attempt::Retry("server refused to resume (416)".into()));
        }
        Err(ureq::Error::Status(code, r)) if code >= 500 || code == 429 => {
            return Err(Attempt::Retry(format!("HTTP {code} {}", r.status_text())));
        }
        Err(ureq::Error::Status(code, r)) => {
            return Err(Attempt::Fatal(DataError::Download {
                url: url.into(),
                message: format!("HTTP {code} {}", r.status_text()),
            }));
        }
        Err(ureq::Error::Transport(t)) => {
            // ureq puts the address in front; the error names it already.
            let message = t.to_string();
            return Err(Attempt::Retry(message.strip_prefix(&format!("{url}: ")).unwrap_or(&message).to_string()));
        }
    };
    let resumed = have > 0 && response.status() == 206;
    let expected: Option<u64> = response.header("Content-Length").and_then(|v| v.trim().parse().ok());
    let mut file = if resumed {
        OpenOptions::new().append(true).open(part).map_err(DataError::io(part))?
    } else {
        File::create(part).map_err(DataError::io(part))?
    };
    let start = if resumed { have } else { 0 };
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(expected.map_or(0, |n| n + start));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        bar.set_position(start);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush().map_err(DataError::io(part))?;
                bar.abandon();
                return Err(Attempt::Retry(format!("connection lost after {} bytes: {e}", start + received)));
            }
        };
        file.write_all(&buf[..n]).map_err(DataError::io(part))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    file.sync_all().map_err(DataError::io(part))?;
    bar.finish_and_clear();
    if let Some(expected) = expected
        && received < expected
    {
        return Err(Attempt::Retry(format!("truncated: received {received} of {expected} bytes")));
    }
    Ok((received, resumed))
}

/// The state of one manifest file in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Not there.
    Missing,
    /// An interrupted download of this many bytes (`NAME.part`).
    Partial(u64),
    /// Present under its final name, with this many bytes (verified when it was written).
    Present(u64),
}

/// Where a data set lives under `data_dir`, and the state of each of its files (no hashing).
pub fn cache_state(manifest: &Manifest, data_dir: &Path) -> Vec<(ManifestFile, CacheState)> {
    // A name that could leave the data directory was refused when the manifest was parsed.
    let dir = data_dir.join(&manifest.name);
    manifest
        .files
        .iter()
        .map(|f| {
            let path = dir.join(&f.name);
            let state = match (std::fs::metadata(&path), std::fs::metadata(part_path(&path))) {
                (Ok(m), _) => CacheState::Present(m.len()),
                (Err(_), Ok(m)) => CacheState::Partial(m.len()),
                _ => CacheState::Missing,
            };
            (f.clone(), state)
        })
        .collect()
}

/// Fetches and verifies every file of `manifest` into `data_dir/NAME/`, unpacks its archives
/// there (once: a stamp file records it), and returns that folder. Works offline when the files
/// are already present.
pub fn fetch_dataset(manifest: &Manifest, data_dir: &Path, options: &FetchOptions) -> Result<PathBuf, DataError> {
    let dir = manifest.dir_in(data_dir)?;
    for file in &manifest.files {
        let dest = dir.join(&file.name);
        let outcome = fetch_file(&file.url, &dest, &file.sha256, options)?;
        if options.progress {
            match outcome {
                Fetched::Cached => eprintln!("{}: present, sha256 verified", dest.display()),
                Fetched::Downloaded { bytes } => {
                    eprintln!("{}: downloaded {bytes} bytes, sha256 verified", dest.display())
                }
            }
        }
        if file.extract {
            let stamp = dir.join(format!(".{}.extracted", file.name));
            let done = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == file.sha256);
            if !done {
                extract(&dest, &dir, &ExtractLimits::default())?;
                std::fs::write(&stamp, &file.sha256).map_err(DataError::io(&stamp))?;
            }
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::folder::tests::tmp;

    /// What the test server does with a request for a path.
    #[derive(Clone)]
    enum Reply {
        /// 200 with the body (or 206 with the requested tail when a Range is sent).
        Ok(Vec<u8>),
        /// Claims `len` bytes, sends `body`, then closes the connection.
        Truncated { body: Vec<u8>, len: usize },
        /// 404.
        NotFound,
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1; `script` maps a path to a list of replies, one per
    /// request (the last repeats). Returns the base URL and the request log.
    fn serve(script: Vec<(&'static str, Vec<Reply>)>) -> (String, Arc<Mutex<Vec<String>>>, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut counts = std::collections::HashMap::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (path, range) = read_request(&stream);
                if path == "/quit" {
                    break;
                }
                log2.lock().unwrap().push(format!("{path} {}", range.map_or("-".into(), |r| r.to_string())));
                let n = counts.entry(path.clone()).or_insert(0usize);
                let replies = script.iter().find(|(p, _)| *p == path).map(|(_, r)| r.clone()).unwrap_or_default();
                let reply = replies.get(*n).or(replies.last()).cloned().unwrap_or(Reply::NotFound);
                *n += 1;
                respond(stream, reply, range);
            }
        });
        (format!("http://{addr}"), log, addr)
    }

    fn read_request(stream: &TcpStream) -> (String, Option<usize>) {
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                range = v.trim().trim_end_matches('-').parse().ok();
            }
        }
        (path, range)
    }

    fn respond(mut s: TcpStream, reply: Reply, range: Option<usize>) {
        let _ = match reply {
            Reply::Ok(body) => match range {
                Some(from) if from < body.len() => {
                    let tail = &body[from..];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                        tail.len(),
                        body.len() - 1,
                        body.len()
                    );
                    s.write_all(head.as_bytes()).and_then(|_| s.write_all(tail))
                }
                _ => {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body))
                }
            },
            Reply::Truncated { body, len } => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
                s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body))
            }
            Reply::NotFound => {
                s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
            }
        };
        let _ = s.flush();
        let _ = s.shutdown(std::net::Shutdown::Both);
    }

    fn sha(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn quick() -> FetchOptions {
        FetchOptions { retries: 2, backoff: Duration::ZERO, progress: false, timeout: Duration::from_secs(5) }
    }

    fn data() -> Vec<u8> {
        (0..5000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn good_file_then_cached_offline() {
        let d = tmp("fetch-good");
        let (base, log, addr) = serve(vec![("/good", vec![Reply::Ok(data())])]);
        let dest = d.join("sub/good.bin");
        let got = fetch_file(&format!("{base}/good"), &dest, &sha(&data()), &quick()).unwrap();
        assert_eq!(got, Fetched::Downloaded { bytes: 5000 });
        assert_eq!(std::fs::read(&dest).unwrap(), data());
        assert!(!part_path(&dest).exists());
        // Server gone: the verified file is used as is.
        let _ = TcpStream::connect(addr).and_then(|mut s| s.write_all(b"GET /quit HTTP/1.1\r\n\r\n"));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fetch_file(&format!("{base}/good"), &dest, &sha(&data()), &quick()).unwrap(), Fetched::Cached);
        assert_eq!(log.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn wrong_checksum_keeps_nothing() {
        let d = tmp("fetch-sum");
        let (base, _, _) = serve(vec![("/f", vec![Reply::Ok(b"evil bytes".to_vec())])]);
        let dest = d.join("f.bin");
        let err = fetch_file(&format!("{base}/f"), &dest, &sha(&data()), &quick()).unwrap_err().to_string();
        assert_eq!(err, format!("{}: sha256 is {}, expected {}", dest.display(), sha(b"evil bytes"), sha(&data())));
        assert!(!dest.exists() && !part_path(&dest).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn truncated_body_is_resumed_with_a_range_request() {
        let d = tmp("fetch-trunc");
        let full = data();
        let cut = Reply::Truncated { body: full[..1234].to_vec(), len: full.len() };
        let (base, log, _) = serve(vec![("/f", vec![cut, Reply::Ok(full.clone())])]);
        let dest = d.join("f.bin");
        let got = fetch_file(&format!("{base}/f"), &dest, &sha(&full), &quick()).unwrap();
        assert_eq!(got, Fetched::Downloaded { bytes: 5000 - 1234 });
        assert_eq!(std::fs::read(&dest).unwrap(), full);
        assert_eq!(*log.lock().unwrap(), vec!["/f -", "/f 1234"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_part_is_thrown_away_and_fetched_again() {
        let d = tmp("fetch-stale");
        let (base, log, _) = serve(vec![("/f", vec![Reply::Ok(data())])]);
        let dest = d.join("f.bin");
        std::fs::write(part_path(&dest), [0xEE; 100]).unwrap();
        let got = fetch_file(&format!("{base}/f"), &dest, &sha(&data()), &quick()).unwrap();
        assert_eq!(got, Fetched::Downloaded { bytes: 5000 });
        assert_eq!(*log.lock().unwrap(), vec!["/f 100", "/f -"]);
        assert_eq!(std::fs::read(&dest).unwrap(), data());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn not_found_is_not_retried() {
        let d = tmp("fetch-404");
        let (base, log, _) = serve(vec![]);
        let dest = d.join("f.bin");
        let err = fetch_file(&format!("{base}/missing"), &dest, &sha(b""), &quick()).unwrap_err().to_string();
        assert_eq!(err, format!("{base}/missing: HTTP 404 Not Found"));
        assert_eq!(log.lock().unwrap().len(), 1);
        assert!(!dest.exists() && !part_path(&dest).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn server_gone_mid_transfer_keeps_only_the_part_then_resumes() {
        let d = tmp("fetch-gone");
        let full = data();
        let (base, _, addr) =
            serve(vec![("/f", vec![Reply::Truncated { body: full[..3000].to_vec(), len: full.len() }])]);
        let dest = d.join("f.bin");
        let url = format!("{base}/f");
        // First request cut short; then the server goes away for the retries.
        let once = FetchOptions { retries: 0, ..quick() };
        let err = fetch_file(&url, &dest, &sha(&full), &once).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{url}: ")) && err.contains("3000"), "{err}");
        let _ = TcpStream::connect(addr).and_then(|mut s| s.write_all(b"GET /quit HTTP/1.1\r\n\r\n"));
        std::thread::sleep(Duration::from_millis(50));
        let err = fetch_file(&url, &dest, &sha(&full), &quick()).unwrap_err().to_string();
        assert!(err.contains("gave up after 3 attempts") && err.contains(".part kept for resuming"), "{err}");
        assert!(!dest.exists(), "nothing under the final name");
        assert_eq!(std::fs::metadata(part_path(&dest)).unwrap().len(), 3000);

        // The server is back (at a new address, as a mirror would be): only the rest is fetched.
        let (base2, log2, _) = serve(vec![("/f", vec![Reply::Ok(full.clone())])]);
        let got = fetch_file(&format!("{base2}/f"), &dest, &sha(&full), &quick()).unwrap();
        assert_eq!(got, Fetched::Downloaded { bytes: 2000 });
        assert_eq!(*log2.lock().unwrap(), vec!["/f 3000"]);
        assert_eq!(std::fs::read(&dest).unwrap(), full);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn dataset_with_archive_is_fetched_extracted_and_listed() {
        let d = tmp("fetch-dataset");
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "inner/x.bin", &b"abc"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let (base, _, _) = serve(vec![("/a.tar", vec![Reply::Ok(tar.clone())])]);
        let manifest = Manifest {
            name: "toy".into(),
            description: String::new(),
            homepage: String::new(),
            licence: String::new(),
            citation: String::new(),
            format: crate::manifest::DataFormat::Idx,
            files: vec![ManifestFile {
                name: "a.tar".into(),
                url: format!("{base}/a.tar"),
                sha256: sha(&tar),
                size: None,
                extract: true,
            }],
        };
        assert_eq!(cache_state(&manifest, &d)[0].1, CacheState::Missing);
        let dir = fetch_dataset(&manifest, &d, &quick()).unwrap();
        assert_eq!(std::fs::read(dir.join("inner/x.bin")).unwrap(), b"abc");
        assert_eq!(cache_state(&manifest, &d)[0].1, CacheState::Present(tar.len() as u64));
        assert_eq!(data_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
