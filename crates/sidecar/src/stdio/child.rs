//! One MCP server run as a child process that speaks stdio: started in a
//! process group of its own (so a signal reaches the whole server, `npx`
//! and the node it starts alike), its stdout cut into bounded lines and
//! read as JSON, its stdin fed one message per line, its stderr passed
//! through untouched, and its exit reported.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use tollgate_mcp::stdio::{Line, Lines};

/// How to start the server.
#[derive(Clone, Debug)]
pub(crate) struct Command {
    /// The program and its arguments.
    pub(crate) argv: Vec<OsString>,
    /// The longest line read from the server, in bytes.
    pub(crate) max_line_bytes: usize,
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No command was given.
    #[error(
        "no MCP server command given: put it after `--`, e.g. `-- npx -y @modelcontextprotocol/server-everything`"
    )]
    Empty,
    /// The operating system refused to start it.
    #[error("cannot start the MCP server {program:?}: {source}")]
    Io {
        /// The program.
        program: OsString,
        /// Why.
        source: std::io::Error,
    },
}

/// What the server said on stdout.
#[derive(Debug)]
pub(crate) enum FromChild {
    /// A JSON value (an object, or an array for a batch).
    Message(Value),
    /// A line that is not JSON-RPC; `detail` says what it is.
    Unreadable(String),
    /// A line longer than the bound, dropped.
    TooLong(usize),
    /// Stdout ended: no more answers will come.
    Closed,
}

/// How the server ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl Exit {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 1,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exited with code {c}"),
            (None, Some(s)) => write!(f, "was killed by signal {s}"),
            (None, None) => write!(f, "ended"),
        }
    }
}

/// A running server.
pub(crate) struct Child {
    /// Its process (and process group) id.
    pid: Option<i32>,
    stdin: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    exit: watch::Receiver<Option<Exit>>,
}

/// The server's stdin is closed: it exited, or is being stopped.
#[derive(Debug, thiserror::Error)]
#[error("the MCP server no longer reads its input")]
pub(crate) struct Gone;

/// Starts the server; what it writes arrives on the receiver.
pub(crate) fn spawn(command: &Command) -> Result<(Child, mpsc::Receiver<FromChild>), SpawnError> {
    let (program, args) = command.argv.split_first().ok_or(SpawnError::Empty)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|source| SpawnError::Io {
        program: program.clone(),
        source,
    })?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(SpawnError::Io {
            program: program.clone(),
            source: std::io::Error::other("its stdin or stdout could not be piped"),
        });
    };

    let (to_child, mut lines_in) = mpsc::channel::<Vec<u8>>(256);
    tokio::spawn(async move {
        while let Some(line) = lines_in.recv().await {
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        // Dropping stdin closes it: the server sees the end of its input.
    });

    let (out, from_child) = mpsc::channel(256);
    let max = command.max_line_bytes;
    tokio::spawn(async move {
        let mut lines = Lines::new(max);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for line in lines.push(&buf[..n]) {
                if out.send(read(line)).await.is_err() {
                    return;
                }
            }
        }
        if let Some(line) = lines.finish() {
            let _ = out.send(read(line)).await;
        }
        let _ = out.send(FromChild::Closed).await;
    });

    let (exited, exit) = watch::channel(None);
    tokio::spawn(async move {
        let status = child.wait().await;
        let exit = match status {
            Ok(s) => Exit {
                code: s.code(),
                #[cfg(unix)]
                signal: std::os::unix::process::ExitStatusExt::signal(&s),
                #[cfg(not(unix))]
                signal: None,
            },
            Err(_) => Exit {
                code: None,
                signal: None,
            },
        };
        let _ = exited.send(Some(exit));
    });

    Ok((
        Child {
            pid,
            stdin: Mutex::new(Some(to_child)),
            exit,
        },
        from_child,
    ))
}

/// One line of the server's stdout, read.
fn read(line: Line) -> FromChild {
    let bytes = match line {
        Line::TooLong { bytes } => return FromChild::TooLong(bytes),
        Line::Complete(bytes) => bytes,
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => FromChild::Message(v),
        Ok(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_object) => {
            FromChild::Message(Value::Array(items))
        }
        Ok(_) => FromChild::Unreadable("a JSON value that is not a JSON-RPC message".into()),
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut shown: String = text.chars().take(120).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            FromChild::Unreadable(format!("a line that is not JSON: {shown:?}"))
        }
    }
}

impl Child {
    /// Writes one message as a line.
    pub(crate) async fn send(&self, message: &Value) -> Result<(), Gone> {
        let sender = self
            .stdin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Gone)?;
        sender
            .send(tollgate_mcp::stdio::encode(message))
            .await
            .map_err(|_| Gone)
    }

    /// Closes the server's stdin once what was sent is written: the MCP
    /// way to ask a stdio server to exit.
    pub(crate) fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// How it ended, once it has.
    pub(crate) async fn wait(&self) -> Exit {
        let mut exit = self.exit.clone();
        loop {
            if let Some(e) = *exit.borrow_and_update() {
                return e;
            }
            if exit.changed().await.is_err() {
                return Exit {
                    code: None,
                    signal: None,
                };
            }
        }
    }

    /// Whether it has ended.
    pub(crate) fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Sends `signal` to the server's whole process group.
    pub(crate) fn signal(&self, signal: i32) {
        #[cfg(unix)]
        if let Some(pid) = self.pid
            && self.exited().is_none()
        {
            // SAFETY: killpg has no memory effects; a stale group id at
            // worst signals nothing (the group is gone with its leader's
            // exit, which was checked just before).
            unsafe {
                libc::killpg(pid, signal);
            }
        }
        #[cfg(not(unix))]
        let _ = signal;
    }

    /// Stops the server: closes its stdin, waits `grace`, sends SIGTERM to
    /// its group, waits `grace` again, then SIGKILL.
    pub(crate) async fn stop(&self, grace: Duration) -> Exit {
        self.close_stdin();
        if let Ok(e) = tokio::time::timeout(grace, self.wait()).await {
            return e;
        }
        #[cfg(unix)]
        self.signal(libc::SIGTERM);
        if let Ok(e) = tokio::time::timeout(grace, self.wait()).await {
            return e;
        }
        #[cfg(unix)]
        self.signal(libc::SIGKILL);
        self.wait().await
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // The group may hold more than the leader (npx starts node): none
        // of it outlives its tollgate.
        #[cfg(unix)]
        self.signal(libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            max_line_bytes: 64,
        }
    }

    #[tokio::test]
    async fn lines_become_messages_and_the_exit_code_is_kept() {
        let (child, mut rx) = spawn(&sh(
            r#"read line; echo "$line"; echo 'not json'; printf '%0100d\n' 0; echo '[]'; exit 7"#,
        ))
        .unwrap();
        child
            .send(&serde_json::json!({"jsonrpc": "2.0", "method": "x"}))
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Some(m) = rx.recv().await {
            let closed = matches!(m, FromChild::Closed);
            seen.push(m);
            if closed {
                break;
            }
        }
        assert!(
            matches!(&seen[0], FromChild::Message(v) if v["method"] == "x"),
            "{seen:?}"
        );
        assert!(matches!(&seen[1], FromChild::Unreadable(d) if d.contains("not json")));
        assert!(matches!(seen[2], FromChild::TooLong(100)));
        assert!(matches!(&seen[3], FromChild::Unreadable(_)));
        assert_eq!(child.wait().await.shell_code(), 7);
        assert!(child.send(&Value::Null).await.is_ok() || child.exited().is_some());
    }

    #[tokio::test]
    async fn stop_closes_stdin_then_signals_the_group() {
        // Exits on end of input.
        let (polite, _rx) = spawn(&sh("cat >/dev/null")).unwrap();
        assert_eq!(polite.stop(Duration::from_secs(5)).await.shell_code(), 0);
        // Ignores its input's end; SIGTERM ends it and its own child.
        let (stubborn, _rx) = spawn(&sh("sleep 600 & wait")).unwrap();
        let exit = stubborn.stop(Duration::from_millis(200)).await;
        assert_eq!(exit.signal, Some(libc::SIGTERM), "{exit}");
        assert_eq!(exit.shell_code(), 143);
    }

    #[test]
    fn no_command_is_an_error_that_says_what_to_add() {
        let e = spawn(&Command {
            argv: vec![],
            max_line_bytes: 1,
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("after `--`"), "{e}");
    }
}
