//! `events.jsonl`: event types, the append-only writer, and the incremental reader shared by the CLI and the TUI.
//!
//! One JSON object a line: `{"t": <unix seconds>, "kind": "train"|"val"|"eval"|"checkpoint"|"log"|"status",
//! "step": <u64>, "loss": <f64>?, …extra fields}`.
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{now_unix, JobError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Train,
    Val,
    Eval,
    Checkpoint,
    Log,
    Status,
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub t: f64,
    pub kind: EventKind,
    #[serde(default)]
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Anything else: `lr`, `throughput`, `message`, `level`, `state`, `total_steps`, metric values…
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Event {
    /// An event stamped now.
    pub fn new(kind: EventKind, step: u64) -> Self {
        Event { t: now_unix(), kind, step, loss: None, extra: Map::new() }
    }
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = Some(loss);
        self
    }
    /// Add an extra field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
    /// A `log` event with `level` and `message`.
    pub fn log(step: u64, level: &str, message: impl Into<String>) -> Self {
        Event::new(EventKind::Log, step).with("level", level).with("message", message.into())
    }
    /// An extra field as a number.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.extra.get(key).and_then(Value::as_f64)
    }
    /// An extra field as a string.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }
}

/// Appends events, one `write` per line on a file opened with `O_APPEND`, so concurrent readers see whole lines
/// or a torn last line, and a crash loses at most the line being written.
#[derive(Debug)]
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    pub fn open(path: &Path) -> Result<Self, JobError> {
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| JobError::io(path, e))?;
        Ok(EventWriter { file, path: path.to_owned() })
    }

    pub fn append(&mut self, event: &Event) -> Result<(), JobError> {
        let mut line =
            serde_json::to_vec(event).map_err(|source| JobError::Json { path: self.path.clone(), source })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| JobError::io(&self.path, e))
    }

    /// fsync (after checkpoints and at the end of the job).
    pub fn sync(&mut self) -> Result<(), JobError> {
        self.file.sync_data().map_err(|e| JobError::io(&self.path, e))
    }
}

/// Default bytes read per `poll`.
pub const DEFAULT_POLL_BYTES: usize = 1 << 20;
/// A line longer than this is dropped (reported as a warning) instead of buffered.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads `events.jsonl` incrementally: keeps the byte offset and a torn last line between polls, reopens the file
/// on every poll (works on NFS, survives rotation), resets when the file shrinks or is replaced. Memory is bounded
/// by `max_poll_bytes` + `MAX_LINE_BYTES`; events are handed out, never kept.
#[derive(Debug)]
pub struct EventReader {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    partial: Vec<u8>,
    /// Skipping the rest of an over-long line until its newline.
    skipping: bool,
    max_poll_bytes: usize,
    more: bool,
}

impl EventReader {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EventReader {
            path: path.into(),
            offset: 0,
            inode: None,
            partial: Vec::new(),
            skipping: false,
            max_poll_bytes: DEFAULT_POLL_BYTES,
            more: false,
        }
    }

    /// Read at most `bytes` per poll.
    pub fn with_max_poll_bytes(mut self, bytes: usize) -> Self {
        self.max_poll_bytes = bytes.max(1);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Bytes consumed so far (complete lines plus a buffered torn line).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// The last poll stopped at its byte budget: there is more to read now.
    pub fn has_more(&self) -> bool {
        self.more
    }

    fn reset(&mut self) {
        self.offset = 0;
        self.partial.clear();
        self.skipping = false;
    }

    /// New complete events since the last poll. A missing file gives nothing; a malformed complete line becomes a
    /// `log` event with `level: "warn"`; a torn last line waits for its newline. Only an IO error on an existing
    /// file is an error.
    pub fn poll(&mut self) -> Result<Vec<Event>, JobError> {
        self.more = false;
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.reset();
                self.inode = None;
                return Ok(Vec::new());
            }
            Err(e) => return Err(JobError::io(&self.path, e)),
        };
        let meta = file.metadata().map_err(|e| JobError::io(&self.path, e))?;
        let inode = meta.ino();
        if self.inode.is_some_and(|old| old != inode) || meta.len() < self.offset {
            // Replaced or truncated: start over.
            self.reset();
        }
        self.inode = Some(inode);
        if meta.len() == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(|e| JobError::io(&self.path, e))?;
        let budget = (meta.len() - self.offset).min(self.max_poll_bytes as u64);
        let mut chunk = Vec::with_capacity(budget as usize);
        file.take(budget).read_to_end(&mut chunk).map_err(|e| JobError::io(&self.path, e))?;
        let start_offset = self.offset;
        self.offset += chunk.len() as u64;
        self.more = self.offset < meta.len();
        Ok(self.split_lines(&chunk, start_offset))
    }

    /// Drain everything available now (several polls).
    pub fn poll_all(&mut self) -> Result<Vec<Event>, JobError> {
        let mut out = self.poll()?;
        while self.more {
            out.extend(self.poll()?);
        }
        Ok(out)
    }

    fn split_lines(&mut self, chunk: &[u8], chunk_offset: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let mut rest = chunk;
        let mut pos = chunk_offset;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (piece, tail) = rest.split_at(nl);
            let line_start = pos - self.partial.len() as u64;
            if self.skipping {
                self.skipping = false;
            } else {
                self.partial.extend_from_slice(piece);
                if let Some(event) = parse_line(&self.partial, line_start) {
                    events.push(event);
                }
            }
            self.partial.clear();
            pos += nl as u64 + 1;
            rest = &tail[1..];
        }
        if !self.skipping {
            if self.partial.len() + rest.len() > MAX_LINE_BYTES {
                events.push(Event::log(
                    0,
                    "warn",
                    format!("events.jsonl: line at byte {} longer than {MAX_LINE_BYTES} bytes skipped", pos),
                ));
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        events
    }
}

fn parse_line(line: &[u8], offset: u64) -> Option<Event> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    Some(serde_json::from_slice(trimmed).unwrap_or_else(|e| {
        Event::log(0, "warn", format!("events.jsonl: malformed line at byte {offset}: {e}")).with("malformed", true)
    }))
}

/// Read a whole events file at once (small files, tests). Missing file → empty.
pub fn read_all(path: &Path) -> Result<Vec<Event>, JobError> {
    EventReader::new(path).poll_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs;

    fn append(path: &Path, text: &str) {
        let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn writer_round_trips_extra_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events.jsonl");
        let mut w = EventWriter::open(&path).unwrap();
        let e = Event::new(EventKind::Train, 3).with_loss(0.5).with("lr", 1e-3);
        w.append(&e).unwrap();
        let mut got = read_all(&path).unwrap();
        assert_eq!(got.len(), 1);
        // serde_json's default float parsing may differ from the written value in the last bit.
        assert!((got[0].t - e.t).abs() < 1e-6);
        got[0].t = e.t;
        assert_eq!(got, vec![e]);
        assert_eq!(got[0].number("lr"), Some(1e-3));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"kind\":\"train\"") && text.ends_with('\n'), "{text}");
    }

    #[test]
    fn missing_and_empty_files_give_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events.jsonl");
        let mut r = EventReader::new(&path);
        assert!(r.poll().unwrap().is_empty());
        fs::write(&path, b"").unwrap();
        assert!(r.poll().unwrap().is_empty());
        assert_eq!(r.offset(), 0);
    }

    #[test]
    fn keeps_offset_and_waits_for_a_torn_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events.jsonl");
        append(&path, "{\"t\":1,\"kind\":\"train\",\"step\":1,\"loss\":0.5}\n{\"t\":2,\"kind\":\"tr");
        let mut r = EventReader::new(&path);
        let first = r.poll().unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].step, 1);
        assert!(r.poll().unwrap().is_empty(), "torn line must wait");
        append(&path, "ain\",\"step\":2}\n");
        let second = r.poll().unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].step, 2);
        assert_eq!(r.offset(), fs::metadata(&path).unwrap().len());
        assert!(r.poll().unwrap().is_empty());
    }

    #[test]
    fn malformed_line_becomes_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events.jsonl");
        append(&path, "not json\n\n{\"t\":1,\"kind\":\"log\",\"step\":0,\"message\":\"hi\"}\n");
        let got = EventReader::new(&path).poll().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, EventKind::Log);
        assert_eq!(got[0].text("level"), Some("warn"));
        assert!(got[0].text("message").unwrap().contains("byte 0"));
        assert_eq!(got[1].text("message"), Some("hi"));
    }

    #[test]
    fn truncation_and_replacement_reset_the_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events.jsonl");
        append(&path, "{\"t\":1,\"kind\":\"train\",\"step\":1}\n{\"t\":1,\"kind\":\"train\",\"step\":2}\n");
        let mut r = EventReader::new(&path);
        assert_eq!(r.poll().unwrap().len(), 2);
        fs::write(&path, "{\"t\":1,\"kind\":\"train\",\"step\":9}\n").unwrap();
        let got = r.poll().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].step, 9);
        // Replaced by a new file (rotation) of the same length or longer.
        let other = tmp.path().join("new.jsonl");
        fs::write(&other, "{\"t\":1,\"kind\":\"train\",\"step\":10}\n{\"t\":1,\"kind\":\"val\",\"step\":11}\n")
            .unwrap();
        fs::rename(&other, &path).unwrap();
        let got = r.poll().unwrap();
        assert_eq!(got.iter().map(|e| e.step).collect::<Vec<_>>(), vec![10, 11]);
    }

    #[test]
    fn poll_is_bounded_and_resumes_mid_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events.jsonl");
        let mut w = EventWriter::open(&path).unwrap();
        for step in 0..50 {
            w.append(&Event::new(EventKind::Train, step).with_loss(1.0)).unwrap();
        }
        let mut r = EventReader::new(&path).with_max_poll_bytes(17);
        let mut steps = Vec::new();
        let mut polls = 0;
        loop {
            let got = r.poll().unwrap();
            polls += 1;
            steps.extend(got.iter().map(|e| e.step));
            if !r.has_more() {
                break;
            }
        }
        assert!(polls > 50);
        assert_eq!(steps, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn over_long_line_is_skipped_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("events.jsonl");
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        append(&path, &format!("{long}\n{{\"t\":1,\"kind\":\"train\",\"step\":5}}\n"));
        let got = EventReader::new(&path).with_max_poll_bytes(4096).poll_all().unwrap();
        assert_eq!(got.len(), 2, "{:?}", got.iter().map(|e| e.kind).collect::<Vec<_>>());
        assert_eq!(got[0].kind, EventKind::Log);
        assert_eq!(got[1].step, 5);
    }
}
