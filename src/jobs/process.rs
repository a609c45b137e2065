//! Process identity and signals without `unsafe`: `/proc/<pid>/stat` for liveness and start time (pid reuse
//! detection), `/bin/kill` for signals.
use std::fs;
use std::process::{Command, Stdio};

/// A process as recorded in `status.json` and the lock file: the pid plus its start time (field 22 of
/// `/proc/<pid>/stat`, clock ticks since boot), so that a reused pid is not mistaken for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: Option<u64>,
}

/// What `/proc/<pid>/stat` says about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    state: char,
    start_time: u64,
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parse `/proc/<pid>/stat`: the command name (field 2) is in parentheses and may hold spaces or `)`, so fields are
/// counted from the last `)`: state is field 3, start time field 22.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

impl ProcessId {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        ProcessId { pid, start_time: read_stat(pid).map(|s| s.start_time) }
    }

    /// A pid as it is now (its start time read from /proc).
    pub fn of(pid: u32) -> Self {
        ProcessId { pid, start_time: read_stat(pid).map(|s| s.start_time) }
    }

    /// True when the pid exists, is not a zombie, and (when a start time was recorded) started at that time.
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        match read_stat(self.pid) {
            None => false,
            Some(stat) if matches!(stat.state, 'Z' | 'X' | 'x') => false,
            Some(stat) => self.start_time.is_none_or(|t| t == stat.start_time),
        }
    }
}

/// The signals the jobs layer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

/// Send a signal to a process if it is still the recorded one (same start time). Returns false if it was not alive.
pub fn send_signal(process: &ProcessId, signal: Signal) -> std::io::Result<bool> {
    if !process.is_alive() {
        return Ok(false);
    }
    let name = match signal {
        Signal::Term => "-TERM",
        Signal::Kill => "-KILL",
    };
    let status = Command::new("kill")
        .arg(name)
        .arg(process.pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let mut fields = vec!["S".to_string()];
        for i in 4..=30 {
            fields.push(i.to_string());
        }
        let text = format!("123 (a (weird) name) {}", fields.join(" "));
        let stat = parse_stat(&text).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.start_time, 22);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 2"), None);
    }

    #[test]
    fn current_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.start_time.is_some());
        assert!(me.is_alive());
        let reused = ProcessId { pid: me.pid, start_time: me.start_time.map(|t| t + 1) };
        assert!(!reused.is_alive());
        assert!(!ProcessId { pid: 0, start_time: None }.is_alive());
    }

    #[test]
    fn exited_child_is_dead() {
        let mut child = Command::new("true").spawn().unwrap();
        let id = ProcessId::of(child.id());
        child.wait().unwrap();
        assert!(!id.is_alive());
    }
}
