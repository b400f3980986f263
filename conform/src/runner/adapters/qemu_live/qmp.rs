//! A QMP client: QEMU's JSON monitor protocol over a Unix socket. One
//! command at a time (`execute` with an `id`), events skipped, every
//! command and answer kept in a transcript that replays with `socat` or
//! `qmp-shell`.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a QMP exchange failed (a command QEMU refused is not one of these:
/// it is [`Reply::Error`]).
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP: the monitor closed the connection")]
    Closed,
    #[error("QMP: cannot parse {line:?}: {source}")]
    Json {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("QMP: unexpected greeting {0}")]
    Greeting(String),
}

/// QEMU's answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `{"return": ...}`
    Return(Value),
    /// `{"error": {"class": ..., "desc": ...}}`: the description.
    Error(String),
}

/// A command QEMU refused: its description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Reply {
    /// The returned value, or the refusal.
    pub fn ok(self) -> Result<Value, Refused> {
        match self {
            Reply::Return(v) => Ok(v),
            Reply::Error(e) => Err(Refused(e)),
        }
    }
}

/// A connected, negotiated QMP monitor.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    /// Every command sent and answer received, one JSON object a line
    /// (`>` commands, `<` answers).
    pub transcript: Vec<String>,
}

impl Qmp {
    /// Connects to the monitor at `socket`, reads the greeting and leaves
    /// capabilities negotiation mode. `timeout` bounds every read.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 0,
            transcript: Vec::new(),
        };
        let greeting = q.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting(greeting.to_string()));
        }
        if let Reply::Error(e) = q.execute("qmp_capabilities", json!({}))? {
            return Err(QmpError::Greeting(e));
        }
        Ok(q)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(QmpError::Closed);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(line.trim()).map_err(|source| QmpError::Json {
            line: line.trim().to_owned(),
            source,
        })
    }

    /// Runs one command and waits for its answer (events in between are
    /// skipped).
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Reply, QmpError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "execute": command, "id": id });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let text = msg.to_string();
        self.transcript.push(format!("> {text}"));
        self.writer.write_all(text.as_bytes())?;
        self.writer.write_all(b"\n")?;
        loop {
            let v = self.read_message()?;
            if v.get("event").is_some() {
                continue;
            }
            self.transcript.push(format!("< {v}"));
            if v.get("id").and_then(Value::as_u64).is_some_and(|i| i != id) {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(Reply::Return(r.clone()));
            }
            if let Some(e) = v.get("error") {
                let desc = e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("(no description)");
                return Ok(Reply::Error(desc.to_owned()));
            }
        }
    }
}
